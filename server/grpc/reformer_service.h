// reformer.v1.ReformerService (Score, Embed, GetModelInfo, Tokenize, Generate) on the callback API.
// Generate is a server stream (generate_reactor.h) on the GenerationService.
// Documents: text (tokenized with the model's tokenizer) or ids; each computed as if alone. They
// are decoded into the request object (server/request) and checked once by Validate. Status codes:
// see proto/reformer.proto. Borrows everything in ServiceEnv; thread-safe.
//
// Every method is registered raw (grpc::ByteBuffer in and out, as ModelInfer is in
// kserve_service.h): the request is parsed here, so bytes that are not the method's message (garbage,
// a proto3 string that is not UTF-8) are answered INVALID_ARGUMENT naming the message type and
// counted like any other bad request, instead of failing inside gRPC. Clients see the ordinary
// messages.
#pragma once

#include "proto/reformer.grpc.pb.h"
#include "server/grpc/connection_streams.h"
#include "server/request/served_model.h"

namespace reformer::serving {

namespace reformer_grpc {
using S = reformer::v1::ReformerService;
using Base = S::WithRawCallbackMethod_Score<S::WithRawCallbackMethod_Embed<S::WithRawCallbackMethod_GetModelInfo<
    S::WithRawCallbackMethod_Tokenize<S::WithRawCallbackMethod_Generate<S::Service>>>>>;
}  // namespace reformer_grpc

class ReformerApiService final : public reformer_grpc::Base {
 public:
  explicit ReformerApiService(const ServiceEnv& env)
      : env_(env),
        generate_streams_(env.limits.max_generate_streams_per_connection, "generate_max_streams_per_connection") {}

  // Raw: the bytes of the method's request message in, of its response message out.
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* request) override;

 private:
  absl::Status TokenizeTexts(const reformer::v1::TokenizeRequest& request,
                             reformer::v1::TokenizeResponse* response) const;

  const ServiceEnv env_;
  ConnectionStreams generate_streams_;  // active Generate streams per client connection
};

}  // namespace reformer::serving
