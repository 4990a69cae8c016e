#include "server/grpc/rpc_reactors.h"

#include <chrono>
#include <utility>

#include "server/batching/clock.h"
#include "server/grpc/auth.h"
#include "server/grpc/status_util.h"
#include "server/health/health_state.h"
#include "server/metrics/server_metrics.h"
#include "server/request/deadline.h"
#include "server/request/exception_status.h"
#include "server/security/token_store.h"

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

grpc::ServerUnaryReactor* AnswerOpenUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                          const char* service, const char* method,
                                          const std::function<absl::Status()>& body) {
  const absl::Time start = env.clock->Now();
  absl::Status status;
  try {
    status = body();
  } catch (...) {
    status = CurrentExceptionStatus("answering the request");
  }
  return FinishUnary(env, ctx, service, method, start, status);
}

grpc::ServerUnaryReactor* AnswerUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                      const char* service, const char* method,
                                      const std::function<absl::Status()>& body) {
  const absl::StatusOr<std::string> tenant = Authenticate(env, *ctx);
  if (!tenant.ok()) return FinishUnary(env, ctx, service, method, env.clock->Now(), tenant.status());
  return AnswerOpenUnary(env, ctx, service, method, body);
}

absl::Status CheckServing(const ServiceEnv& env) { return ServingStatus(*env.health); }

UnaryInferReactor::UnaryInferReactor(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                     const char* service, const char* method, std::string tenant)
    : env_(env),
      ctx_(ctx),
      service_(service),
      method_(method),
      start_(env.clock->Now()),
      tenant_(std::move(tenant)) {
  if (env_.metrics != nullptr) env_.metrics->RpcStarted("unary", service_, method_);
}

void UnaryInferReactor::Reject(const absl::Status& status) {
  if (env_.metrics != nullptr) {
    const char* reason = RejectReason(status, env_.health->draining());
    if (reason != nullptr) env_.metrics->OnRejected(reason);
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
  const Documents& docs = request->documents;
  std::vector<int64_t> lengths(static_cast<size_t>(docs.size()));
  for (int64_t d = 0; d < docs.size(); ++d) lengths[d] = docs.length(d);
  documents_ = docs.size();
  input_tokens_ = docs.total_tokens();
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
  ServerMetrics* const metrics = env_.metrics;
  absl::Status status = env_.inference->Submit(
      std::move(request), [this](InferenceResult result) { OnInferenceDone(std::move(result)); });
  if (!status.ok()) {
    input_tokens_ = documents_ = 0;  // the request metrics count admitted requests only
    Complete(status);
    return;
  }
  if (metrics != nullptr) {
    for (int64_t n : lengths) metrics->ObserveDocumentTokens(n);
  }
}

void UnaryInferReactor::OnInferenceDone(InferenceResult result) {
  output_memory_ = std::move(result.output_memory);  // until the response has been sent
  absl::Status status = result.status;
  if (status.ok()) {
    try {
      status = on_result_(result);
    } catch (...) {
      status = CurrentExceptionStatus("building the response");
    }
  }
  Complete(status);
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
    env_.metrics->RequestFinished(method_, tenant_, status.code(), seconds, input_tokens_, documents_,
                                  absl::ToUnixMillis(absl::Now()));
    env_.metrics->RpcHandled("unary", service_, method_, status.code(), seconds);
  }
  Finish(ToGrpcStatus(status));  // last: OnDone may delete `this` from here on
}

grpc::ServerUnaryReactor* GuardHandler(
    const ServiceEnv& env, grpc::CallbackServerContext* ctx, const char* service,
    const char* method, UnaryInferReactor** reactor,
    const std::function<grpc::ServerUnaryReactor*(const std::string& tenant)>& body) {
  const absl::Time start = env.clock->Now();
  const absl::StatusOr<std::string> tenant = Authenticate(env, *ctx);
  if (!tenant.ok()) {
    if (env.metrics != nullptr) {
      env.metrics->RequestFinished(method, kAnonymousTenant, tenant.status().code(),
                                   absl::ToDoubleSeconds(env.clock->Now() - start), 0, 0,
                                   absl::ToUnixMillis(absl::Now()));
    }
    return FinishUnary(env, ctx, service, method, start, tenant.status());
  }
  absl::Status status;
  try {
    return body(*tenant);
  } catch (...) {
    status = CurrentExceptionStatus("reading the request");
  }
  if (*reactor != nullptr) {
    (*reactor)->Reject(status);
    return *reactor;
  }
  return FinishUnary(env, ctx, service, method, start, status);
}

}  // namespace reformer::serving
