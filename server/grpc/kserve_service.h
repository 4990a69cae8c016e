// KServe v2 / Open Inference Protocol service (inference.GRPCInferenceService) on the callback API,
// plus Triton's ModelStreamInfer and ModelStatistics. Input/output rules: infer_convert.h.
//
// Status codes: INVALID_ARGUMENT bad request (precise message); NOT_FOUND unknown model or
// version; UNAVAILABLE starting, draining or queue full; RESOURCE_EXHAUSTED a request above the
// limits (response bytes, batch/memory budget); DEADLINE_EXCEEDED; CANCELLED; INTERNAL our bug.
// Borrows everything in ServiceEnv; thread-safe (gRPC calls it from its own threads).
#pragma once

#include "proto/grpc_service.grpc.pb.h"
#include "server/grpc/served_model.h"

namespace reformer::serving {

class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit KServeService(const ServiceEnv& env) : env_(env) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* ctx,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* ctx,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;

 private:
  const ServiceEnv env_;
};

}  // namespace reformer::serving
