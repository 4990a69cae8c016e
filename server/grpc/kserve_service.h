// KServe v2 / Open Inference Protocol service (inference.GRPCInferenceService) on the callback API,
// plus Triton's ModelStreamInfer, ModelConfig and ModelStatistics. Input rules: infer_decode.h;
// the one validation: server/request/validate.h; tensors: server/request/model_signature.h.
//
// ModelInfer and ModelStreamInfer are registered as raw methods (grpc::ByteBuffer in and out): the
// request is parsed with protobuf (bounded by the gRPC receive limit), and the response's output
// bytes are the buffers the engine wrote, sent without a copy (infer_encode.h). Clients see the
// ordinary messages.
//
// Status codes: INVALID_ARGUMENT bad request (precise message); NOT_FOUND unknown model or
// version; UNAVAILABLE starting, draining or queue full; RESOURCE_EXHAUSTED a request above the
// limits (response bytes, batch/memory budget) or the server out of memory; DEADLINE_EXCEEDED;
// CANCELLED; INTERNAL our bug. Every RPC finishes exactly once; no exception leaves a handler.
// Borrows everything in ServiceEnv; thread-safe (gRPC calls it from its own threads).
#pragma once

#include "proto/grpc_service.grpc.pb.h"
#include "server/grpc/stream_reactor.h"
#include "server/request/served_model.h"

namespace reformer::serving {

// The generated CallbackService with ModelInfer and ModelStreamInfer raw instead of typed (a raw
// bidi method cannot be stacked on the typed one: their signatures coincide).
namespace kserve_grpc {
using S = inference::GRPCInferenceService;
using Base = S::WithCallbackMethod_ServerLive<S::WithCallbackMethod_ServerReady<
    S::WithCallbackMethod_ModelReady<S::WithCallbackMethod_ServerMetadata<
        S::WithCallbackMethod_ModelMetadata<S::WithRawCallbackMethod_ModelInfer<
            S::WithRawCallbackMethod_ModelStreamInfer<S::WithCallbackMethod_ModelConfig<
                S::WithCallbackMethod_ModelStatistics<S::Service>>>>>>>>>;
}  // namespace kserve_grpc
using KServeServiceBase = kserve_grpc::Base;

class KServeService final : public KServeServiceBase {
 public:
  KServeService(const ServiceEnv& env, const StreamLimits& stream_limits)
      : env_(env), stream_limits_(stream_limits) {}

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
  // Raw: the bytes of a ModelInferRequest in, of a ModelInferResponse out.
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  // Raw: ModelInferRequest bytes in, ModelStreamInferResponse bytes out (stream_reactor.h).
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ModelStreamInfer(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* ctx,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* ctx,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;

 private:
  const ServiceEnv env_;
  const StreamLimits stream_limits_;
};

}  // namespace reformer::serving
