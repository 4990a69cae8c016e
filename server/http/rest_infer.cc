#include "server/http/rest_infer.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/health/health_state.h"
#include "server/http/json_writer.h"
#include "server/http/rest_infer_decode.h"
#include "server/http/rest_infer_encode.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/checked_math.h"
#include "server/request/deadline.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

// The InferenceService's answer, handed from its thread to the waiting handler.
class ResultWaiter {
 public:
  void Set(InferenceResult result) {
    absl::MutexLock lock(&mu_);
    result_ = std::move(result);
    done_ = true;
  }
  // True once the answer is there (waits at most `timeout`).
  bool WaitFor(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  }
  InferenceResult Take() {
    absl::MutexLock lock(&mu_);
    return std::move(result_);
  }

 private:
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  InferenceResult result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

struct RestInferHandler::Call {
  absl::Time start;
  int64_t tokens = 0;  // admitted requests only, as for gRPC
  int64_t documents = 0;
  int http_status = 0;
};

int64_t DefaultRestBodyBytes(const ServiceLimits& limits) {
  return SaturatingAdd(SaturatingMul(16, limits.max_tokens_per_request), int64_t{1} << 20);
}

RestInferHandler::RestInferHandler(const ServiceEnv& env, const RestInferOptions& options,
                                   ComputeSlots* slots)
    : env_(env), options_(options), slots_(slots) {
  if (options_.max_body_bytes <= 0) options_.max_body_bytes = DefaultRestBodyBytes(env.limits);
}

int HttpStatusOf(const absl::Status& status, bool admission) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return admission ? 413 : 503;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kCancelled:
      return 499;  // the client closed the request (nginx's convention; only a half-closed client
                   // sees it)
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

void SendJsonError(HttpExchange* exchange, int status, absl::string_view message, bool close) {
  std::vector<HttpHeader> headers;
  if (status == 503) headers.push_back({"Retry-After", "1"});
  exchange->Send(status, "application/json", JsonErrorBody(message), headers, close);
}

int RestInferHandler::Handle(HttpExchange* exchange, const ModelPath& path,
                             const std::string& tenant) const {
  Call call;
  call.start = env_.clock->Now();
  const absl::Status status = RunAnswered(
      exchange, "answering a REST inference request", [&] { return Run(exchange, path, &call); },
      [&](const absl::Status& s) { Refuse(exchange, s, false, false, &call); });
  if (env_.metrics != nullptr) {
    env_.metrics->RequestFinished(kRestInferMethod, tenant, status.code(),
                                  absl::ToDoubleSeconds(env_.clock->Now() - call.start),
                                  call.tokens, call.documents, absl::ToUnixMillis(absl::Now()));
  }
  return call.http_status;
}

void RestInferHandler::Refuse(HttpExchange* exchange, const absl::Status& status, bool admission,
                              bool discard_body, Call* call) const {
  call->http_status = HttpStatusOf(status, admission);
  const bool unread = discard_body && exchange->content_length() != 0;
  SendJsonError(exchange, call->http_status, status.message(), /*close=*/unread);
  if (unread) {
    exchange->DiscardBody(options_.discard_bytes, env_.clock->Now() + options_.discard_timeout,
                          *env_.clock);
  }
}

absl::Status RestInferHandler::Run(HttpExchange* exchange, const ModelPath& path,
                                   Call* call) const {
  auto count_rejection = [this](const absl::Status& s) {
    const char* reason = RejectReason(s, env_.health->draining());
    if (env_.metrics != nullptr && reason != nullptr) env_.metrics->OnRejected(reason);
  };
  const ComputeSlots::Slot slot = slots_->TryAcquire();
  if (!slot) {
    const absl::Status busy = absl::UnavailableError(
        absl::StrCat("all ", slots_->capacity(),
                     " REST inference slots are busy (--http_infer_threads); retry later, or use "
                     "gRPC for many concurrent requests"));
    if (env_.metrics != nullptr) env_.metrics->OnRejected("queue_full");
    call->http_status = 503;
    SendJsonError(exchange, 503, busy.message(), /*close=*/true);
    return busy;
  }
  absl::Status status = CheckModel(*env_.model, path.name, path.version);
  if (status.ok()) status = ServingStatus(*env_.health);
  if (!status.ok()) {
    count_rejection(status);
    Refuse(exchange, status, /*admission=*/true, /*discard_body=*/true, call);
    return status;
  }
  absl::StatusOr<std::string> body = exchange->ReadBody(
      options_.max_body_bytes, env_.clock->Now() + options_.body_timeout, *env_.clock);
  if (!body.ok()) {
    count_rejection(body.status());
    call->http_status = absl::IsDeadlineExceeded(body.status())    ? 408
                        : absl::IsResourceExhausted(body.status()) ? 413
                        : absl::IsUnavailable(body.status())       ? 503
                                                                   : 400;
    SendJsonError(exchange, call->http_status, body.status().message(), /*close=*/true);
    exchange->DiscardBody(options_.discard_bytes, env_.clock->Now() + options_.discard_timeout,
                          *env_.clock);
    return body.status();
  }
  absl::StatusOr<DecodedRestInfer> decoded = DecodeRestInfer(
      {path.name, path.version, *body, exchange->Header("Inference-Header-Content-Length")},
      *env_.model, LimitsOf(*env_.model, env_.limits));
  std::string().swap(*body);  // the request holds the ids now; the body goes before computing
  if (!decoded.ok()) {
    count_rejection(decoded.status());
    Refuse(exchange, decoded.status(), /*admission=*/true, /*discard_body=*/false, call);
    return decoded.status();
  }
  return SubmitAndAnswer(exchange, *std::move(decoded), call);
}

absl::Status RestInferHandler::SubmitAndAnswer(HttpExchange* exchange, DecodedRestInfer decoded,
                                               Call* call) const {
  InferenceRequest& r = *decoded.request;
  r.deadline =
      EffectiveDeadline(*env_.clock, std::chrono::system_clock::time_point::max(), decoded.timeout);
  if (r.deadline <= env_.clock->Now()) {
    const absl::Status late =
        absl::DeadlineExceededError("the deadline passed before the request was queued");
    Refuse(exchange, late, /*admission=*/true, /*discard_body=*/false, call);
    return late;
  }
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  r.cancelled = cancelled;
  r.method = kRestInferMethod;
  std::vector<int64_t> lengths;
  for (int64_t d = 0; d < r.documents.size(); ++d) lengths.push_back(r.documents.length(d));
  const int64_t tokens = r.documents.total_tokens();
  auto waiter = std::make_shared<ResultWaiter>();
  const absl::Status submitted =
      env_.inference->Submit(std::move(decoded.request),
                             [waiter](InferenceResult result) { waiter->Set(std::move(result)); });
  if (!submitted.ok()) {  // the service counted the rejection
    Refuse(exchange, submitted, /*admission=*/true, /*discard_body=*/false, call);
    return submitted;
  }
  call->tokens = tokens;
  call->documents = static_cast<int64_t>(lengths.size());
  if (env_.metrics != nullptr) {
    for (int64_t n : lengths) env_.metrics->ObserveDocumentTokens(n);
  }
  bool client_gone = false;
  while (!waiter->WaitFor(options_.disconnect_poll)) {
    if (!client_gone && exchange->PeerGone()) {
      client_gone = true;
      cancelled->store(true);  // the service stops it (queued: at once; running: within a layer)
    }
  }
  InferenceResult result = waiter->Take();
  if (client_gone) return absl::CancelledError("the client disconnected before the answer");
  if (!result.status.ok()) {
    Refuse(exchange, result.status, /*admission=*/false, /*discard_body=*/false, call);
    return result.status;
  }
  const MemoryReservation held = std::move(result.output_memory);  // until the response is out
  call->http_status = 200;
  if (!SendInferResponse(exchange, result, *env_.model, decoded.binary)) {
    return absl::CancelledError("the client went away while the response was written");
  }
  return absl::OkStatus();
}

}  // namespace reformer::serving
