#include "server/grpc/rpc_reactors.h"

#include <chrono>
#include <utility>

#include "server/batching/clock.h"
#include "server/grpc/infer_convert.h"
#include "server/grpc/status_util.h"
#include "server/health/health_state.h"
#include "server/metrics/server_metrics.h"

namespace reformer::serving {

grpc::ServerUnaryReactor* FinishUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                      const char* service, const char* method, absl::Time start,
                                      const absl::Status& status) {
  if (env.metrics != nullptr) {
    env.metrics->RpcStarted("unary", service, method);
    env.metrics->RpcHandled("unary", service, method, status.code(),
                            absl::ToDoubleSeconds(env.clock->Now() - start));
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status CheckServing(const ServiceEnv& env) {
  switch (env.health->state()) {
    case ServingState::kReady:
      return absl::OkStatus();
    case ServingState::kStarting:
      return absl::UnavailableError("the server is starting (model loading or warming up); retry");
    case ServingState::kDraining:
      return absl::UnavailableError(
          "the server is shutting down and accepts no new requests; retry on another replica");
  }
  return absl::UnavailableError("not serving");
}

UnaryInferReactor::UnaryInferReactor(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                     const char* service, const char* method)
    : env_(env), ctx_(ctx), service_(service), method_(method), start_(env.clock->Now()) {
  if (env_.metrics != nullptr) env_.metrics->RpcStarted("unary", service_, method_);
}

void UnaryInferReactor::Reject(const absl::Status& status) {
  if (env_.metrics != nullptr) {
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      env_.metrics->OnRejected("invalid");
    } else if (status.code() == absl::StatusCode::kResourceExhausted) {
      env_.metrics->OnRejected("too_large");
    } else if (status.code() == absl::StatusCode::kUnavailable && env_.health->draining()) {
      env_.metrics->OnRejected("draining");
    }
  }
  Complete(status);
}

void UnaryInferReactor::Submit(std::unique_ptr<InferenceRequest> request,
                               std::optional<absl::Duration> timeout, OnResult on_result) {
  absl::Status serving = CheckServing(env_);
  if (!serving.ok()) {
    Reject(serving);
    return;
  }
  documents_ = static_cast<int64_t>(request->documents.size());
  for (const auto& doc : request->documents) {
    input_tokens_ += static_cast<int64_t>(doc.size());
    if (env_.metrics != nullptr) env_.metrics->ObserveDocumentTokens(static_cast<int64_t>(doc.size()));
  }
  request->deadline = EffectiveDeadline(*env_.clock, ctx_->deadline(), timeout);
  if (request->deadline <= env_.clock->Now()) {
    Complete(absl::DeadlineExceededError("the deadline passed before the request was queued"));
    return;
  }
  request->cancelled = cancelled_;
  request->method = method_;
  on_result_ = std::move(on_result);
  // After a successful Submit the done callback may already have finished (and deleted) this
  // reactor: touch no member once Submit returns OK.
  absl::Status status = env_.inference->Submit(std::move(request), [this](InferenceResult result) {
    absl::Status status = result.status;
    if (status.ok()) status = on_result_(result);
    Complete(status);
  });
  if (!status.ok()) Complete(status);
}

void UnaryInferReactor::OnCancel() { cancelled_->store(true); }

void UnaryInferReactor::OnDone() { delete this; }

void UnaryInferReactor::Complete(const absl::Status& result) {
  absl::Status status = result;
  // gRPC cancels the call on the server when its deadline passes; report that as what it is.
  if (status.code() == absl::StatusCode::kCancelled &&
      ctx_->deadline() <= std::chrono::system_clock::now()) {
    status = absl::DeadlineExceededError("the call's deadline passed before the result was ready");
  }
  if (env_.metrics != nullptr) {
    const absl::Time now = env_.clock->Now();
    const double seconds = absl::ToDoubleSeconds(now - start_);
    env_.metrics->RequestFinished(method_, status.code(), seconds, input_tokens_, documents_,
                                  absl::ToUnixMillis(absl::Now()));
    env_.metrics->RpcHandled("unary", service_, method_, status.code(), seconds);
  }
  Finish(ToGrpcStatus(status));  // last: OnDone may delete `this` from here on
}

}  // namespace reformer::serving
