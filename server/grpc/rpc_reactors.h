// Reactors shared by the gRPC services (callback API: handlers never block).
//
// UnaryInferReactor runs one InferenceRequest for a unary RPC. The handler creates it, then calls
// exactly one of Reject() or Submit(); the reactor calls Finish exactly once: on a synchronous
// rejection, from the InferenceService's done callback (OK, error, cancellation, shutdown), and
// records the RPC and request metrics just before. It holds the memory budget's reservation of the
// response's outputs until OnDone (the response has been sent). Client cancellation sets the
// request's cancel flag; the InferenceService then answers CANCELLED and stops computing within
// about one layer. No exception leaves it: one thrown while building the response answers
// RESOURCE_EXHAUSTED (out of memory) or INTERNAL. The reactor deletes itself in OnDone.
//
// GuardHandler authenticates the call (auth.h), then runs a handler body so that no exception leaves
// it either: the RPC is answered RESOURCE_EXHAUSTED/INTERNAL through the reactor if there is one,
// else through a default reactor.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/inference/inference_service.h"
#include "server/request/served_model.h"

namespace reformer::serving {

inline constexpr char kKServeService[] = "inference.GRPCInferenceService";
inline constexpr char kReformerService[] = "reformer.v1.ReformerService";

// Records grpc_server_* metrics for a unary RPC answered inline and finishes it.
grpc::ServerUnaryReactor* FinishUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                      const char* service, const char* method, absl::Time start,
                                      const absl::Status& status);

// Authenticates the call (auth.h: UNAUTHENTICATED without running `body`), runs `body` (it fills
// the response and returns the RPC's status) and finishes the RPC with that status, recording the
// metrics; an exception from `body` answers RESOURCE_EXHAUSTED (out of memory) or INTERNAL instead
// of leaving the handler.
grpc::ServerUnaryReactor* AnswerUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                      const char* service, const char* method,
                                      const std::function<absl::Status()>& body);
// AnswerUnary without authentication: only for ServerLive and ServerReady (probes).
grpc::ServerUnaryReactor* AnswerOpenUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                          const char* service, const char* method,
                                          const std::function<absl::Status()>& body);

// UNAVAILABLE unless the server is READY (starting or draining), with the reason.
absl::Status CheckServing(const ServiceEnv& env);

class UnaryInferReactor final : public grpc::ServerUnaryReactor {
 public:
  // Fills the response from an OK result (it may take the request's buffers); a non-OK return
  // answers the RPC with that status.
  using OnResult = std::function<absl::Status(InferenceResult&)>;

  // `tenant`: the authenticated caller (GuardHandler's), for reformer_requests_total.
  UnaryInferReactor(const ServiceEnv& env, grpc::CallbackServerContext* ctx, const char* service,
                    const char* method, std::string tenant);

  // Answers `status` (not OK) now.
  void Reject(const absl::Status& status);
  // Sets the request's deadline (earlier of the RPC deadline and `timeout`), cancel flag and
  // method, and submits it. Input tokens/documents feed the metrics.
  void Submit(std::unique_ptr<InferenceRequest> request, std::optional<absl::Duration> timeout,
              OnResult on_result);

  void OnCancel() override;
  void OnDone() override;

 private:
  void Complete(const absl::Status& result);
  void OnInferenceDone(InferenceResult result);

  const ServiceEnv env_;
  grpc::CallbackServerContext* const ctx_;
  const char* const service_;
  const char* const method_;
  const absl::Time start_;
  const std::string tenant_;
  int64_t input_tokens_ = 0;
  int64_t documents_ = 0;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  OnResult on_result_;
  MemoryReservation output_memory_;  // released with the reactor, in OnDone
};

// Authenticates the call, then runs `body` with the caller's tenant (it returns the RPC's
// reactor); an exception from it answers the RPC through `*reactor` when the body created one
// (Reject), else through a default reactor. A call refused by authentication is answered
// UNAUTHENTICATED at once and counted in reformer_requests_total (tenant "anonymous").
grpc::ServerUnaryReactor* GuardHandler(
    const ServiceEnv& env, grpc::CallbackServerContext* ctx, const char* service,
    const char* method, UnaryInferReactor** reactor,
    const std::function<grpc::ServerUnaryReactor*(const std::string& tenant)>& body);

}  // namespace reformer::serving
