#include "server/http/rest_generate.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/model/generation.h"
#include "server/health/health_state.h"
#include "server/http/generate_json.h"
#include "server/http/json_writer.h"
#include "server/inference/generation_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/deadline.h"
#include "server/request/validate.h"

namespace reformer::serving {

// The stream's sink: events from the service's worker, taken by the handler thread. An event counts
// in unsent() from its arrival until the handler has written it (Written), so the service pauses the
// sequence while the client does not read (generation_service.h, max_unsent).
class GenerateEventQueue final : public GenerationSink {
 public:
  void OnEvent(GenerationEvent event) override {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(event));
    unsent_.fetch_add(1);
  }
  int64_t unsent() const override { return unsent_.load(); }

  // Waits at most `timeout` for events and moves them all to the empty `out`.
  void Take(absl::Duration timeout, std::deque<GenerationEvent>* out) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty(); };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    out->swap(queue_);
  }
  void Written(int64_t events) { unsent_.fetch_sub(events); }

 private:
  absl::Mutex mu_;
  std::deque<GenerationEvent> queue_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> unsent_{0};
};

// What every answer repeats: the model, the client's id, whether logprobs were asked for.
struct GenerateAnswerShape {
  const ServedModel* model;
  std::string id;
  bool logprobs = false;
};

namespace {

// One generate answer object (a whole answer, or one event of a stream).
void WriteGenerateJson(JsonWriter* w, const GenerateAnswerShape& shape, const GenerationEvent& e) {
  w->Raw("{");
  w->Key("model_name");
  w->String(shape.model->name);
  w->Raw(",");
  w->Key("model_version");
  w->String(shape.model->version);
  if (!shape.id.empty()) {
    w->Raw(",");
    w->Key("id");
    w->String(shape.id);
  }
  w->Raw(",");
  w->Key("text_output");
  w->String(e.text);
  w->Raw(",");
  w->Key("output_ids");
  w->Int32Array(e.token_ids.data(), static_cast<int64_t>(e.token_ids.size()));
  if (shape.logprobs) {
    w->Raw(",");
    w->Key("logprobs");
    w->FloatArray(e.logprobs.data(), static_cast<int64_t>(e.logprobs.size()));
  }
  if (e.finish != FinishReason::kNone) {
    w->Raw(absl::StrCat(",\"finish_reason\":\"", FinishReasonName(e.finish), "\",\"seed\":", e.seed,
                        ",\"usage\":{\"prompt_tokens\":", e.usage.prompt_tokens,
                        ",\"generated_tokens\":", e.usage.generated_tokens, ",\"queue_ms\":"));
    w->Double(e.usage.queue_seconds * 1e3);
    w->Raw(",\"time_to_first_token_ms\":");
    w->Double(e.usage.time_to_first_token_seconds * 1e3);
    w->Raw(",\"total_ms\":");
    w->Double(e.usage.total_seconds * 1e3);
    w->Raw("}");
  }
  w->Raw("}");
}

// Hands the sequence's events to `consume` on this (the handler's) thread, in order, until the last
// one; watches the connection meanwhile. `consume` returns false (or throws) once the client is gone:
// the sequence is then cancelled and later events dropped. Never returns (nor throws) before the last
// event, since the queue lives on the caller's stack. Returns the last event's status, CANCELLED when
// the client went away first.
absl::Status PumpEvents(const ServiceEnv& env, absl::Duration poll, HttpExchange* exchange, GenerateEventQueue* queue,
                        std::atomic<bool>* cancelled, const std::function<bool(GenerationEvent&)>& consume) {
  bool gone = false;
  auto cancel = [&] {
    gone = true;
    cancelled->store(true);  // the service ends the sequence before its next step, freeing its cache
    env.generation->Wake();
  };
  std::deque<GenerationEvent> batch;
  for (;;) {
    queue->Take(poll, &batch);
    const int64_t taken = static_cast<int64_t>(batch.size());
    std::optional<absl::Status> last;
    for (GenerationEvent& e : batch) {
      if (e.last()) last = e.status;
      if (gone) continue;
      bool delivered = false;
      try {
        delivered = consume(e);
      } catch (...) {  // out of memory: answered as a lost client (the last event is still awaited)
      }
      if (!delivered) cancel();
    }
    batch.clear();
    queue->Written(taken);
    if (taken > 0) env.generation->Wake();  // a paused sequence may go on
    if (last) return gone ? absl::CancelledError("the client went away during the generation") : *last;
    if (!gone && exchange->PeerGone()) cancel();
  }
}

}  // namespace

struct RestGenerateHandler::Call {
  absl::Time start;
  bool stream = false;
  const char* method = kRestGenerateMethod;
  int64_t tokens = 0;  // the prompt's, once admitted
  int http_status = 0;
};

RestGenerateHandler::RestGenerateHandler(const ServiceEnv& env, const RestInferOptions& options,
                                         ComputeSlots* slots)
    : env_(env), options_(options), slots_(slots) {
  if (options_.max_body_bytes <= 0) options_.max_body_bytes = DefaultRestBodyBytes(env.limits);
}

int RestGenerateHandler::Handle(HttpExchange* exchange, const ModelPath& path, const std::string& tenant,
                                bool stream) const {
  Call call;
  call.start = env_.clock->Now();
  call.stream = stream;
  call.method = stream ? kRestGenerateStreamMethod : kRestGenerateMethod;
  const absl::Status status = RunAnswered(
      exchange, "answering a REST generate request", [&] { return Run(exchange, path, &call); },
      [&](const absl::Status& s) { Refuse(exchange, s, false, false, &call); });
  if (env_.metrics != nullptr) {
    env_.metrics->RequestFinished(call.method, tenant, status.code(),
                                  absl::ToDoubleSeconds(env_.clock->Now() - call.start), call.tokens,
                                  call.tokens > 0 ? 1 : 0, absl::ToUnixMillis(absl::Now()));
  }
  return call.http_status;
}

void RestGenerateHandler::Refuse(HttpExchange* exchange, const absl::Status& status, bool admission,
                                 bool discard_body, Call* call) const {
  call->http_status = HttpStatusOf(status, admission);
  const bool unread = discard_body && exchange->content_length() != 0;
  SendJsonError(exchange, call->http_status, status.message(), /*close=*/unread);
  if (unread) {
    exchange->DiscardBody(options_.discard_bytes, env_.clock->Now() + options_.discard_timeout, *env_.clock);
  }
}

absl::Status RestGenerateHandler::Run(HttpExchange* exchange, const ModelPath& path, Call* call) const {
  const ComputeSlots::Slot slot = slots_->TryAcquire();
  if (!slot) {
    const absl::Status busy = absl::UnavailableError(absl::StrCat(
        "all ", slots_->capacity(),
        " REST compute slots are busy (--http_infer_threads); retry later, or use gRPC Generate"));
    if (env_.metrics != nullptr) env_.metrics->OnRejected("queue_full");
    call->http_status = 503;
    SendJsonError(exchange, 503, busy.message(), /*close=*/true);
    return busy;
  }
  absl::Status status = CheckModel(*env_.model, path.name, path.version);
  if (status.ok()) status = ServingStatus(*env_.health);
  if (status.ok() && env_.generation == nullptr) {
    status = absl::UnimplementedError(absl::StrCat("this server does not serve generation: ", env_.generation_off));
  }
  if (!status.ok()) {
    if (env_.metrics != nullptr && env_.health->draining()) env_.metrics->OnRejected("draining");
    Refuse(exchange, status, /*admission=*/true, /*discard_body=*/true, call);
    return status;
  }
  if (call->stream && !exchange->http11()) {
    const absl::Status old = absl::FailedPreconditionError(
        "generate_stream sends Server-Sent Events with chunked transfer, which needs HTTP/1.1");
    call->http_status = 505;
    const bool unread = exchange->content_length() != 0;
    SendJsonError(exchange, 505, old.message(), /*close=*/unread);
    if (unread) {
      exchange->DiscardBody(options_.discard_bytes, env_.clock->Now() + options_.discard_timeout, *env_.clock);
    }
    return old;
  }
  absl::StatusOr<std::string> body =
      exchange->ReadBody(options_.max_body_bytes, env_.clock->Now() + options_.body_timeout, *env_.clock);
  if (!body.ok()) {
    call->http_status = absl::IsDeadlineExceeded(body.status())    ? 408
                        : absl::IsResourceExhausted(body.status()) ? 413
                        : absl::IsUnavailable(body.status())       ? 503
                                                                   : 400;
    SendJsonError(exchange, call->http_status, body.status().message(), /*close=*/true);
    exchange->DiscardBody(options_.discard_bytes, env_.clock->Now() + options_.discard_timeout, *env_.clock);
    return body.status();
  }
  return Submit(exchange, *std::move(body), call);
}

absl::Status RestGenerateHandler::Submit(HttpExchange* exchange, std::string body, Call* call) const {
  absl::StatusOr<DecodedGenerateJson> decoded =
      DecodeGenerateJson(body, *env_.model, env_.generation->options().limits);
  std::string().swap(body);
  if (decoded.ok() && !call->stream && decoded->stream.value_or(false)) {
    decoded = absl::InvalidArgumentError(
        "parameter 'stream' is true: POST to .../generate_stream for a stream of events");
  }
  if (!decoded.ok()) {
    if (env_.metrics != nullptr) env_.metrics->OnRejected("invalid");
    Refuse(exchange, decoded.status(), /*admission=*/true, /*discard_body=*/false, call);
    return decoded.status();
  }
  GenerateRequest& r = *decoded->request;
  r.deadline = EffectiveDeadline(*env_.clock, std::chrono::system_clock::time_point::max(), decoded->timeout);
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  r.cancelled = cancelled;
  r.method = call->method;
  const GenerateAnswerShape shape{env_.model, r.id, r.return_logprobs};
  const int64_t prompt_tokens = static_cast<int64_t>(r.prompt.size());
  GenerateEventQueue queue;  // outlives the sequence: PumpEvents returns after its last event
  const absl::Status submitted = env_.generation->Submit(std::move(decoded->request), &queue);
  if (!submitted.ok()) {  // the service counted the rejection
    Refuse(exchange, submitted, /*admission=*/true, /*discard_body=*/false, call);
    return submitted;
  }
  call->tokens = prompt_tokens;
  return call->stream ? AnswerStream(exchange, shape, &queue, cancelled.get(), call)
                      : AnswerWhole(exchange, shape, &queue, cancelled.get(), call);
}

absl::Status RestGenerateHandler::AnswerWhole(HttpExchange* exchange, const GenerateAnswerShape& shape,
                                              GenerateEventQueue* queue, std::atomic<bool>* cancelled,
                                              Call* call) const {
  GenerationEvent all;  // the whole answer as one event
  const absl::Status status =
      PumpEvents(env_, options_.disconnect_poll, exchange, queue, cancelled, [&all](GenerationEvent& e) {
        all.token_ids.insert(all.token_ids.end(), e.token_ids.begin(), e.token_ids.end());
        all.logprobs.insert(all.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
        all.text += e.text;
        if (e.last()) {
          all.finish = e.finish;
          all.seed = e.seed;
          all.usage = e.usage;
        }
        return true;
      });
  if (absl::IsCancelled(status)) return status;  // nobody to answer
  if (!status.ok()) {
    Refuse(exchange, status, /*admission=*/false, /*discard_body=*/false, call);
    return status;
  }
  std::string body;
  StringSink sink(&body);
  JsonWriter w(&sink);
  WriteGenerateJson(&w, shape, all);
  w.Flush();
  call->http_status = 200;
  if (!exchange->Send(200, "application/json", body)) {
    return absl::CancelledError("the client went away while the answer was written");
  }
  return absl::OkStatus();
}

absl::Status RestGenerateHandler::AnswerStream(HttpExchange* exchange, const GenerateAnswerShape& shape,
                                               GenerateEventQueue* queue, std::atomic<bool>* cancelled,
                                               Call* call) const {
  std::string chunk;
  auto consume = [&](GenerationEvent& e) {
    if (!exchange->head_sent()) {
      if (!e.status.ok()) {  // nothing sent yet: the error gets its own status
        Refuse(exchange, e.status, /*admission=*/false, /*discard_body=*/false, call);
        return true;
      }
      call->http_status = 200;
      if (!exchange->StartChunked(200, "text/event-stream")) return false;
    }
    chunk.assign("data: ");
    if (e.status.ok()) {
      StringSink sink(&chunk);
      JsonWriter w(&sink);
      WriteGenerateJson(&w, shape, e);
      w.Flush();
    } else {
      chunk += JsonErrorBody(e.status.message());
    }
    chunk += "\n\n";
    if (!exchange->WriteChunk(chunk)) return false;
    return !e.last() || exchange->FinishChunked();
  };
  const absl::Status status = PumpEvents(env_, options_.disconnect_poll, exchange, queue, cancelled, consume);
  if (!status.ok() && !absl::IsCancelled(status) && call->http_status == 0) {
    call->http_status = HttpStatusOf(status, /*admission=*/false);
  }
  return status;
}

}  // namespace reformer::serving
