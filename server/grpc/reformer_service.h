// reformer.v1.ReformerService (Score, Embed, GetModelInfo, Tokenize, Generate) on the callback API.
// Generate is a server stream (generate_reactor.h) on the GenerationService.
// Documents: text (tokenized with the model's tokenizer) or ids; each computed as if alone. They
// are decoded into the request object (server/request) and checked once by Validate. Status codes:
// see proto/reformer.proto. Borrows everything in ServiceEnv; thread-safe.
#pragma once

#include "proto/reformer.grpc.pb.h"
#include "server/request/served_model.h"

namespace reformer::serving {

class ReformerApiService final : public reformer::v1::ReformerService::CallbackService {
 public:
  explicit ReformerApiService(const ServiceEnv& env) : env_(env) {}

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx,
                                  const reformer::v1::ScoreRequest* request,
                                  reformer::v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx,
                                  const reformer::v1::EmbedRequest* request,
                                  reformer::v1::EmbedResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const reformer::v1::GetModelInfoRequest* request,
                                         reformer::v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const reformer::v1::TokenizeRequest* request,
                                     reformer::v1::TokenizeResponse* response) override;
  grpc::ServerWriteReactor<reformer::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const reformer::v1::GenerateRequest* request) override;

 private:
  absl::Status TokenizeTexts(const reformer::v1::TokenizeRequest& request,
                             reformer::v1::TokenizeResponse* response) const;

  const ServiceEnv env_;
};

}  // namespace reformer::serving
