#include "server/grpc/generate_reactor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpc/grpc_security.h"
#include "absl/synchronization/mutex.h"
#include "engine/model/tokenizer.h"
#include "server/batching/clock.h"
#include "server/grpc/auth.h"
#include "server/grpc/infer_encode.h"
#include "server/grpc/rpc_reactors.h"
#include "server/grpc/status_util.h"
#include "server/health/health_state.h"
#include "server/inference/generation_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/deadline.h"
#include "server/request/exception_status.h"
#include "server/security/token_store.h"

namespace reformer::serving {
namespace {

namespace v1 = ::reformer::v1;
constexpr char kMethod[] = "Generate";

v1::FinishReason WireReason(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

v1::GenerateResponse ToWire(GenerationEvent& e) {
  v1::GenerateResponse m;
  m.mutable_token_ids()->Add(e.token_ids.begin(), e.token_ids.end());
  m.set_text(std::move(e.text));
  m.mutable_logprobs()->Add(e.logprobs.begin(), e.logprobs.end());
  m.set_finish_reason(WireReason(e.finish));
  if (e.finish != FinishReason::kNone) {
    v1::GenerateUsage* u = m.mutable_usage();
    u->set_prompt_tokens(e.usage.prompt_tokens);
    u->set_generated_tokens(e.usage.generated_tokens);
    u->set_queue_ms(e.usage.queue_seconds * 1e3);
    u->set_time_to_first_token_ms(e.usage.time_to_first_token_seconds * 1e3);
    u->set_total_ms(e.usage.total_seconds * 1e3);
    m.set_seed(e.seed);
  }
  return m;
}

// The wire form of one message (the method is raw: reformer_service.h).
grpc::ByteBuffer Serialized(const v1::GenerateResponse& m) {
  grpc::ByteBuffer bytes;
  bool own_buffer = false;
  const grpc::Status s = grpc::SerializationTraits<v1::GenerateResponse>::Serialize(m, &bytes, &own_buffer);
  if (!s.ok()) throw std::bad_alloc();  // a message of ours always serializes but for memory
  return bytes;
}

// The mode field; a value this server does not know is an error, never a default.
absl::StatusOr<DecodeMode> WireMode(int mode) {
  switch (mode) {
    case v1::DECODE_MODE_CACHED: return DecodeMode::kCached;
    case v1::DECODE_MODE_RECOMPUTE: return DecodeMode::kRecompute;
    default: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "mode ", mode, " is not a DecodeMode (DECODE_MODE_CACHED = 0, DECODE_MODE_RECOMPUTE = 1)"));
}

// The connection `ctx`'s call came on, for the per-connection stream cap. The peer string alone
// tells TCP connections apart (address and port) but not Unix-socket ones: every client of a socket
// is the same "unix:..." string. So the key adds the call's auth context: gRPC core's server auth
// filter gives every call a reference to the one context its connection's handshake made (with
// insecure and TLS credentials alike), so its address names the connection. The address cannot be
// reused by another connection while this call holds the context (ctx->auth_context(), kept by the
// server context until the call is done, after the reactor and its slot are gone).
std::string ConnectionKey(grpc::CallbackServerContext* ctx) {
  std::string key = ctx->peer();
  if (ctx->auth_context() == nullptr) return key;  // also takes the reference described above
  grpc_auth_context* auth = grpc_call_auth_context(ctx->c_call());
  if (auth != nullptr) {
    absl::StrAppend(&key, "#", absl::Hex(reinterpret_cast<uintptr_t>(auth)));
    grpc_auth_context_release(auth);
  }
  return key;
}

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                              public GenerationSink {
 public:
  GenerateReactor(const ServiceEnv& env, ConnectionStreams* connections, grpc::CallbackServerContext* ctx)
      : env_(env), connections_(connections), ctx_(ctx), start_(env.clock->Now()) {
    if (env_.metrics != nullptr) env_.metrics->RpcStarted("server_stream", kReformerService, kMethod);
  }

  // Authenticates the call (auth.h, before anything of the request is looked at), parses, decodes
  // and submits `raw`, or finishes the call with the reason it cannot run.
  void Start(const grpc::ByteBuffer& raw) {
    absl::StatusOr<std::string> tenant = Authenticate(env_, *ctx_);
    absl::Status status = tenant.status();
    if (tenant.ok()) {
      tenant_ = *std::move(tenant);
      status = TakeConnectionSlot();
      if (status.ok()) status = Submit(raw);
    }
    if (status.ok()) return;  // the service owns the stream now: touch nothing
    GenerationEvent last;
    last.status = std::move(status);
    OnEvent(std::move(last));
  }

  // GenerationSink (worker threads).
  void OnEvent(GenerationEvent event) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      if (event.last()) {
        final_received_ = true;
        final_status_ = event.status;
      }
      if (event.status.ok() && !StoppedLocked()) {
        try {
          queue_.push_back(Serialized(ToWire(event)));
          unsent_.fetch_add(1);
        } catch (...) {  // out of memory: the client misses this message; the stream ends with the error
          final_status_ = CurrentExceptionStatus("building a Generate message");
        }
      }
      StepLocked(actions);
    }
    Perform(actions);  // the last use of `this`
  }
  int64_t unsent() const override { return unsent_.load(); }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      unsent_.fetch_sub(1);  // the client has the message (or is gone)
      write_done_ = true;
      if (!ok) write_failed_ = true;
      if (!ok) cancelled_->store(true);  // the client is gone: stop its sequence
      if (write_returned_) CompleteWriteLocked();
      StepLocked(actions);
    }
    if (env_.generation != nullptr) env_.generation->Wake();  // a paused sequence may go on
    Perform(actions);
  }

  void OnCancel() override {
    cancelled_->store(true);  // the service stops the sequence before its next step
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      call_cancelled_ = true;
      StepLocked(actions);
    }
    if (env_.generation != nullptr) env_.generation->Wake();
    Perform(actions);
  }

  void OnDone() override { delete this; }

 private:
  struct Actions {
    const grpc::ByteBuffer* write = nullptr;
    bool finish = false;
    absl::Status status;
    std::deque<grpc::ByteBuffer> dropped;  // destroyed outside the lock
  };

  // Counts this call against its connection until the reactor is deleted (OnDone).
  absl::Status TakeConnectionSlot() {
    if (connections_ == nullptr) return absl::OkStatus();
    absl::StatusOr<ConnectionStreams::Slot> slot = connections_->Acquire(ConnectionKey(ctx_));
    if (!slot.ok()) {
      if (env_.metrics != nullptr) env_.metrics->OnRejected("connection_streams");
      return slot.status();
    }
    connection_slot_ = *std::move(slot);
    return absl::OkStatus();
  }

  absl::Status Submit(const grpc::ByteBuffer& raw) {
    v1::GenerateRequest wire;
    if (absl::Status s = Parse(raw, &wire); !s.ok()) {
      if (env_.metrics != nullptr && absl::IsInvalidArgument(s)) env_.metrics->OnRejected("invalid");
      return s;
    }
    if (env_.generation == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("this server does not serve generation: ", env_.generation_off));
    }
    // Rejections before the service are counted here; the service counts its own (GenerationObserver).
    if (absl::Status s = CheckServing(env_); !s.ok()) {
      if (env_.metrics != nullptr && env_.health->draining()) env_.metrics->OnRejected("draining");
      return s;
    }
    absl::StatusOr<std::unique_ptr<GenerateRequest>> request = DecodeGenerate(wire, *env_.model);
    if (!request.ok()) {
      if (env_.metrics != nullptr) env_.metrics->OnRejected("invalid");
      return request.status();
    }
    (*request)->deadline = EffectiveDeadline(*env_.clock, ctx_->deadline(), std::nullopt);
    (*request)->cancelled = cancelled_;
    prompt_tokens_ = static_cast<int64_t>((*request)->prompt.size());
    return env_.generation->Submit(*std::move(request), this);
  }

  static absl::Status Parse(const grpc::ByteBuffer& raw, v1::GenerateRequest* wire) {
    if (!raw.Valid()) return absl::CancelledError("the client ended the call before its request message arrived");
    return ParseMessage(raw, wire, "reformer.v1.GenerateRequest");
  }

  bool StoppedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return call_cancelled_ || write_failed_;
  }

  // A write is over when gRPC has called OnWriteDone AND the StartWrite call that began it has
  // returned (in either order): only then is its message freed and the next write or Finish
  // started. gRPC orders the two through its own completion queue, which ThreadSanitizer cannot
  // see (Debian's gRPC is uninstrumented); joining them under mu_ makes every later use of the
  // call (the next StartWrite, Finish, freeing the message) visibly ordered after everything the
  // StartWrite did, on whichever thread it ran (docs/results/fuzz.md, "TSan and the Generate RPC").
  void CompleteWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    queue_.pop_front();
    writing_ = false;
    write_done_ = false;
    write_returned_ = false;
  }

  void StepLocked(Actions& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    if (StoppedLocked() && !writing_) {  // then no message in queue_ has been written
      unsent_.fetch_sub(static_cast<int64_t>(queue_.size()));
      a.dropped.swap(queue_);
    }
    if (!writing_ && !queue_.empty()) {
      writing_ = true;
      a.write = &queue_.front();  // only OnWriteDone pops it
    }
    if (final_received_ && !writing_ && queue_.empty()) {
      finished_ = true;
      a.finish = true;
      a.status = final_status_;
      if (call_cancelled_ && a.status.ok()) a.status = absl::CancelledError("the client cancelled");
    }
  }

  // Runs the actions decided under mu_; a write is followed by the actions that become possible
  // when it is over (CompleteWriteLocked), if OnWriteDone came first.
  void Perform(Actions& a) {
    while (a.write != nullptr) {
      StartWrite(a.write);
      Actions next;
      {
        absl::MutexLock lock(&mu_);
        write_returned_ = true;
        if (!write_done_) return;  // OnWriteDone goes on from here: `this` may be gone
        CompleteWriteLocked();
        StepLocked(next);
      }
      a = std::move(next);
    }
    if (!a.finish) return;
    absl::Status status = a.status;
    // gRPC cancels the call when its deadline passes; report that as what it is.
    if (absl::IsCancelled(status) && ctx_->deadline() <= std::chrono::system_clock::now()) {
      status = absl::DeadlineExceededError("the call's deadline passed during the generation");
    }
    if (env_.metrics != nullptr) {
      const double seconds = absl::ToDoubleSeconds(env_.clock->Now() - start_);
      env_.metrics->RequestFinished(kMethod, tenant_, status.code(), seconds, prompt_tokens_, 1,
                                    absl::ToUnixMillis(absl::Now()));
      env_.metrics->RpcHandled("server_stream", kReformerService, kMethod, status.code(), seconds);
    }
    Finish(ToGrpcStatus(status));  // last: OnDone may delete `this` from here on
  }

  const ServiceEnv env_;
  ConnectionStreams* const connections_;  // may be nullptr: no per-connection limit
  ConnectionStreams::Slot connection_slot_;  // released when the reactor is deleted
  grpc::CallbackServerContext* const ctx_;
  const absl::Time start_;
  int64_t prompt_tokens_ = 0;
  std::string tenant_ = kAnonymousTenant;  // the authenticated caller; set in Start before Submit
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  std::atomic<int64_t> unsent_{0};

  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);  // front = in flight when writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;         // a write is begun and not over
  bool write_done_ ABSL_GUARDED_BY(mu_) = false;      // ... OnWriteDone has run for it
  bool write_returned_ ABSL_GUARDED_BY(mu_) = false;  // ... its StartWrite call has returned
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool call_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool final_received_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GenerateRequest>> DecodeGenerate(const v1::GenerateRequest& wire,
                                                                 const ServedModel& model) {
  auto r = std::make_unique<GenerateRequest>();
  switch (wire.prompt().content_case()) {
    case v1::Document::kText: {
      if (model.tokenizer == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the prompt is text but model '", model.name, "' has no tokenizer; send token ids"));
      }
      absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(wire.prompt().text());
      if (!ids.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("the prompt: ", ids.status().message()));
      }
      r->prompt = *std::move(ids);
      r->text_input = true;
      break;
    }
    case v1::Document::kIds:
      r->prompt.assign(wire.prompt().ids().ids().begin(), wire.prompt().ids().ids().end());
      break;
    default:
      return absl::InvalidArgumentError("the prompt has neither text nor ids");
  }
  r->max_new_tokens = wire.max_new_tokens();
  r->temperature = wire.temperature();
  r->top_k = wire.top_k();
  r->top_p = wire.top_p();
  r->seed = wire.seed();
  r->stop.assign(wire.stop().begin(), wire.stop().end());
  absl::StatusOr<DecodeMode> mode = WireMode(wire.mode());
  if (!mode.ok()) return mode.status();
  r->mode = *mode;
  r->return_logprobs = wire.return_logprobs();
  r->priority = static_cast<int>(std::min<uint32_t>(wire.priority(), 1u << 30));
  r->ignore_eos = wire.ignore_eos();
  r->method = kMethod;
  return r;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* NewGenerateReactor(const ServiceEnv& env,
                                                               ConnectionStreams* connections,
                                                               grpc::CallbackServerContext* ctx,
                                                               const grpc::ByteBuffer* request) {
  auto* reactor = new GenerateReactor(env, connections, ctx);
  try {
    reactor->Start(*request);
  } catch (...) {
    // Start threw before the service took the stream (decoding or submitting): answer here.
    GenerationEvent last;
    last.status = CurrentExceptionStatus("reading the Generate request");
    reactor->OnEvent(std::move(last));
  }
  return reactor;
}

}  // namespace reformer::serving
