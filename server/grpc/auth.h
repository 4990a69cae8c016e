// Bearer-token authentication of gRPC calls (--auth_tokens_file), over the TokenStore that the
// HTTP adapter shares (server/security/token_store.h).
//
// Every RPC needs `authorization: Bearer <token>` metadata, except grpc.health.v1.Health and
// server reflection (gRPC's own services, never routed here), ServerLive and ServerReady. The
// services apply it in one place per kind of handler, so a new RPC is covered by using them:
//   - AnswerUnary (rpc_reactors.h): authenticates before running the body; AnswerOpenUnary is the
//     exception for ServerLive/ServerReady;
//   - GuardHandler (rpc_reactors.h): authenticates before the body, which receives the tenant;
//   - a streaming reactor calls Authenticate first thing (ModelStreamInfer: stream_reactor.cc) and
//     finishes at once with its status when it is not OK.
// A refused call is UNAUTHENTICATED before anything of its request is looked at.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/request/served_model.h"

namespace reformer::serving {

// The caller's tenant (the token's name) when `env.tokens` is set and the call carries a valid
// token; kAnonymousTenant when authentication is off; UNAUTHENTICATED otherwise (also for more
// than one authorization entry).
absl::StatusOr<std::string> Authenticate(const ServiceEnv& env, const grpc::ServerContextBase& ctx);

}  // namespace reformer::serving
