#include "server/grpc/stream_reactor.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/alarm.h"
#include "proto/grpc_service.pb.h"
#include "server/batching/clock.h"
#include "server/grpc/auth.h"
#include "server/grpc/infer_decode.h"
#include "server/grpc/infer_encode.h"
#include "server/grpc/rpc_reactors.h"
#include "server/grpc/status_util.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/deadline.h"
#include "server/request/exception_status.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

constexpr char kMethod[] = "ModelStreamInfer";

// What one message's answer is about (for the error response and the metrics).
struct MessageInfo {
  std::string id;
  std::string model_name;
  absl::Time start;
  int64_t tokens = 0;
  int64_t documents = 0;
  int64_t projected_bytes = 0;  // counted against max_unsent_bytes while pending
};

// A response waiting to be written, with the memory budget's hold on its outputs (released once
// gRPC has taken the bytes).
struct Outgoing {
  grpc::ByteBuffer bytes;
  MemoryReservation memory;
};

class StreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamReactor(const ServiceEnv& env, const StreamLimits& limits, grpc::CallbackServerContext* ctx)
      : env_(env), limits_(limits), ctx_(ctx), start_(env.clock->Now()) {
    if (env_.metrics != nullptr) env_.metrics->RpcStarted("bidi_stream", kKServeService, kMethod);
    absl::StatusOr<std::string> tenant = Authenticate(env_, *ctx_);
    if (!tenant.ok()) {  // refused before any message is read
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
      }
      if (env_.metrics != nullptr) {
        env_.metrics->RpcHandled("bidi_stream", kKServeService, kMethod, tenant.status().code(),
                                 absl::ToDoubleSeconds(env_.clock->Now() - start_));
      }
      Finish(ToGrpcStatus(tenant.status()));
      return;
    }
    tenant_ = *std::move(tenant);
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      StepLocked(actions);
    }
    Perform(actions);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      grpc::ByteBuffer message;
      message.Swap(&read_);
      HandleGuarded(message);  // `reading_` is still set: the stream cannot finish meanwhile
    }
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) reads_done_ = true;
      StepLocked(actions);
    }
    Perform(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      unsent_bytes_ -= static_cast<int64_t>(queue_.front().bytes.Length());
      actions.sent = std::move(queue_.front());  // its budget hold is released outside the lock
      queue_.pop_front();
      writing_ = false;
      if (!ok) write_failed_ = true;
      StepLocked(actions);
    }
    Perform(actions);
  }

  void OnCancel() override {
    cancelled_->store(true);  // pending requests of this stream stop (InferenceService polls it)
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      call_cancelled_ = true;
      StepLocked(actions);
    }
    Perform(actions);
  }

  void OnDone() override { delete this; }

 private:
  // What to do after a state change, decided under the lock and done outside it. Perform() is the
  // last use of `this` in every reaction: a write or read it starts keeps the stream alive, and
  // Finish ends it.
  struct Actions {
    const grpc::ByteBuffer* write = nullptr;
    bool read = false;
    bool finish = false;
    absl::Status status;        // the call's status when `finish`
    bool watch = false;         // arm the stall watch
    bool cancel_watch = false;  // the stream is done but for the watch: fire it now
    bool cancel_call = false;   // the stream stalled
    // Responses done with (sent, or dropped after the call stopped): destroyed with the Actions,
    // outside the lock, returning their outputs to the memory budget.
    Outgoing sent;
    std::deque<Outgoing> dropped;
  };

  bool StoppedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return call_cancelled_ || write_failed_ || !stall_status_.ok();
  }

  // The stall watch (stream_reactor.h): an alarm polls the injected clock while a write is in
  // flight; `ok` is false when it was cancelled because the stream is finishing.
  void OnWatch(bool ok) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      watching_ = false;
      if (ok) CheckStallLocked(actions);
      StepLocked(actions);
    }
    Perform(actions);
  }

  // A write in flight for the stalled timeout: the stream stops, its responses' memory returns to
  // the budget now, its pending requests are cancelled, and the call is cancelled (the client's
  // transport holds the last write, so the status cannot overtake it).
  void CheckStallLocked(Actions& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::Duration waited = env_.clock->Now() - write_started_;
    if (!writing_ || StoppedLocked() || waited < limits_.stalled_timeout) return;
    stall_status_ = absl::ResourceExhaustedError(absl::StrCat(
        "the client took no response for ", absl::FormatDuration(waited), " (--stream_stalled_timeout_s) while ",
        queue_.size() + pending_, " responses (", unsent_bytes_, " bytes) waited; the stream was ended and "
        "their memory freed"));
    cancelled_->store(true);
    a.sent.memory = std::move(queue_.front().memory);  // its bytes stay with the write in flight
    while (queue_.size() > 1) {
      a.dropped.push_back(std::move(queue_.back()));
      queue_.pop_back();
    }
    a.cancel_call = true;
    ++outside_;
  }

  // Decides the next actions into `a` (which may already hold a sent response).
  void StepLocked(Actions& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    if (StoppedLocked() && !writing_) {
      for (const Outgoing& o : queue_) unsent_bytes_ -= static_cast<int64_t>(o.bytes.Length());
      a.dropped.swap(queue_);  // nobody will read them
    }
    if (!writing_ && !queue_.empty()) {
      writing_ = true;
      write_started_ = env_.clock->Now();
      a.write = &queue_.front().bytes;  // only OnWriteDone pops it, after this write completed
    }
    if (writing_ && !watching_ && outside_ == 0 && !StoppedLocked()) {
      watching_ = a.watch = true;
      watch_cancelled_ = false;
      watch_wait_ = limits_.stalled_timeout - (env_.clock->Now() - write_started_);
      ++outside_;
    }
    const int64_t owed = pending_ + static_cast<int64_t>(queue_.size());
    if (!reading_ && !reads_done_ && !StoppedLocked() && owed < limits_.max_unsent_responses &&
        unsent_bytes_ < limits_.max_unsent_bytes) {
      reading_ = true;
      a.read = true;
    }
    if (!reading_ && !writing_ && pending_ == 0 && queue_.empty() &&
        (reads_done_ || StoppedLocked())) {
      if (watching_ || outside_ > 0) {  // the watch's callback or a call outside still uses `this`
        if (watching_ && outside_ == 0 && !watch_cancelled_) {
          watch_cancelled_ = a.cancel_watch = true;
          ++outside_;
        }
        return;
      }
      finished_ = true;
      a.finish = true;
      a.status = stall_status_;
    }
  }

  // Ends an operation started outside the lock (cancelling the watch or the call).
  void OutsideDone() {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      --outside_;
      StepLocked(actions);
    }
    Perform(actions);
  }

  void Arm(absl::Duration wait) {
    wait = std::clamp(wait, absl::Milliseconds(1), absl::Seconds(1));  // an injected clock is polled
    alarm_ = std::make_unique<grpc::Alarm>();
    alarm_->Set(absl::ToChronoTime(absl::Now() + wait), [this](bool ok) { OnWatch(ok); });
  }

  void Perform(const Actions& a) {
    if (a.write != nullptr) StartWrite(a.write);
    if (a.read) StartRead(&read_);
    if (a.watch || a.cancel_watch || a.cancel_call) {  // each took one `outside_` count
      if (a.watch) Arm(watch_wait_);
      if (a.cancel_watch) alarm_->Cancel();  // its callback runs soon with ok = false
      if (a.cancel_call) ctx_->TryCancel();
      OutsideDone();  // the last use of `this` on this path
      return;
    }
    if (a.finish) {
      absl::StatusCode code = a.status.code();
      if (code == absl::StatusCode::kOk && cancelled_->load()) code = absl::StatusCode::kCancelled;
      if (env_.metrics != nullptr) {
        env_.metrics->RpcHandled("bidi_stream", kKServeService, kMethod, code,
                                 absl::ToDoubleSeconds(env_.clock->Now() - start_));
      }
      Finish(ToGrpcStatus(a.status));
    }
  }

  void HandleGuarded(const grpc::ByteBuffer& message) {
    if (cancelled_->load()) return;  // the call is over: nobody will read an answer
    MessageInfo info;
    info.start = env_.clock->Now();
    try {
      Handle(message, &info);
    } catch (...) {
      Answer(info, CurrentExceptionStatus("reading a stream message"), /*pending=*/false);
    }
  }

  void Handle(const grpc::ByteBuffer& message, MessageInfo* info) {
    inference::ModelInferRequest wire;
    // Parsed before the serving check, so that every answer (a draining server's UNAVAILABLE
    // included) carries the message's id: a stream client matches answers to requests by it.
    absl::Status status = ParseMessage(message, &wire, "ModelInferRequest");
    if (status.ok()) status = CheckServing(env_);
    info->id = wire.id();
    info->model_name = wire.model_name();
    absl::StatusOr<DecodedInfer> decoded = absl::CancelledError();
    if (status.ok()) {
      decoded = DecodeModelInfer(wire, *env_.model, LimitsOf(*env_.model, env_.limits));
      status = decoded.status();
    }
    if (!status.ok()) {
      Answer(*info, status, /*pending=*/false);
      return;
    }
    Submit(*std::move(decoded), info);
  }

  void Submit(DecodedInfer decoded, MessageInfo* info) {
    InferenceRequest& r = *decoded.request;
    r.deadline = EffectiveDeadline(*env_.clock, ctx_->deadline(), decoded.timeout);
    r.cancelled = cancelled_;
    r.method = kMethod;
    info->tokens = r.documents.total_tokens();
    info->documents = r.documents.size();
    info->projected_bytes = std::min(r.ResponseBytes(), env_.limits.max_response_bytes);
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
      unsent_bytes_ += info->projected_bytes;
    }
    absl::Status status;
    try {
      status = env_.inference->Submit(
          std::move(decoded.request),
          [this, info = *info](InferenceResult result) { OnAnswer(info, result); });
    } catch (...) {
      status = CurrentExceptionStatus("queueing a stream message");
    }
    if (!status.ok()) Answer(*info, status, /*pending=*/true);
  }

  // A worker's answer to one message.
  void OnAnswer(const MessageInfo& info, InferenceResult& result) {
    if (!result.status.ok()) {
      Answer(info, result.status, /*pending=*/true);
      return;
    }
    try {
      Outgoing out{EncodeStreamInferResponse(result, *env_.model), std::move(result.output_memory)};
      Record(info, absl::OkStatus());
      Enqueue(info, std::move(out), /*pending=*/true);
    } catch (...) {
      Answer(info, CurrentExceptionStatus("building a stream response"), /*pending=*/true);
    }
  }

  // Queues the error response of one message (releasing its pending hold when `pending`).
  void Answer(const MessageInfo& info, const absl::Status& status, bool pending) {
    Record(info, status);
    Outgoing out;
    try {
      out.bytes = EncodeStreamError(status, info.id, info.model_name);
    } catch (...) {  // out of memory even for the error: the message goes unanswered
    }
    Enqueue(info, std::move(out), pending);
  }

  void Enqueue(const MessageInfo& info, Outgoing out, bool pending) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      if (pending) {
        --pending_;
        unsent_bytes_ -= info.projected_bytes;
      }
      if (!StoppedLocked() && out.bytes.Length() > 0) {
        try {
          queue_.push_back(std::move(out));
          unsent_bytes_ += static_cast<int64_t>(queue_.back().bytes.Length());
        } catch (...) {  // out of memory: drop this response, keep the stream consistent
        }
      }
      StepLocked(actions);
    }
    Perform(actions);
  }

  void Record(const MessageInfo& info, const absl::Status& status) {
    if (env_.metrics == nullptr) return;
    env_.metrics->RequestFinished(kMethod, tenant_, status.code(),
                                  absl::ToDoubleSeconds(env_.clock->Now() - info.start),
                                  info.tokens, info.documents, absl::ToUnixMillis(absl::Now()));
  }

  const ServiceEnv env_;
  const StreamLimits limits_;
  grpc::CallbackServerContext* const ctx_;
  const absl::Time start_;
  std::string tenant_;     // the authenticated caller; set once in the constructor
  grpc::ByteBuffer read_;  // the read in flight writes here; only the read path touches it
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);

  absl::Mutex mu_;
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);  // unsent responses; front = in flight
  int64_t unsent_bytes_ ABSL_GUARDED_BY(mu_) = 0;    // queued responses + pending ones' projections
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;         // submitted, not yet answered
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool call_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // The stall watch: the front write's start, whether an alarm is set, calls in progress outside
  // the lock that still use `this` (finishing waits for both), and the status once stalled.
  absl::Time write_started_ ABSL_GUARDED_BY(mu_);
  absl::Duration watch_wait_ ABSL_GUARDED_BY(mu_);
  bool watching_ ABSL_GUARDED_BY(mu_) = false;
  bool watch_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  int outside_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status stall_status_ ABSL_GUARDED_BY(mu_);
  // Set or cancelled only by a thread holding an `outside_` count taken with `outside_` == 0.
  std::unique_ptr<grpc::Alarm> alarm_;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewStreamInferReactor(
    const ServiceEnv& env, const StreamLimits& limits, grpc::CallbackServerContext* ctx) {
  return new StreamReactor(env, limits, ctx);
}

}  // namespace reformer::serving
