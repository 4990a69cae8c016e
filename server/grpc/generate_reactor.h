// reformer.v1 Generate: a server-streaming RPC on the callback API, a thin adapter between the wire
// and the GenerationService (server/inference/generation_service.h).
//
// The handler decodes the GenerateRequest into the request layer's GenerateRequest (text prompts
// tokenized here; top_p/seed conventions in server/request/generate_request.h), and submits it; the
// one check is the service's Validate. The reactor is the stream's GenerationSink: every event
// becomes one GenerateResponse, written in order with one write in flight; the last event (a finish
// reason with usage and seed, or an error) finishes the call once everything before it is written.
//
// Bounds: the messages not yet taken by the client (queued + in flight) are the sink's unsent()
// count; at the service's max_unsent the sequence pauses (no new tokens, no new messages) until the
// client reads, and ends RESOURCE_EXHAUSTED after the stalled timeout. A client that disconnects or cancels, or
// whose deadline passes, has its sequence stopped before its next step and its cache freed; queued
// messages are dropped. Every call finishes exactly once, after the service's last event, so the
// service never writes to a finished reactor. No exception leaves a reaction.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "proto/reformer.grpc.pb.h"
#include "absl/status/statusor.h"
#include "server/grpc/connection_streams.h"
#include "server/request/generate_request.h"
#include "server/request/served_model.h"

namespace reformer::serving {

// A reactor for one Generate call; it deletes itself when the call is done.
// The method is raw (reformer_service.h): `request` holds the bytes of a GenerateRequest, each
// message written is a serialized GenerateResponse. The call counts against its connection in
// `connections` (after authentication, before anything else of the request) until it is done;
// beyond the connection's limit it ends RESOURCE_EXHAUSTED without reaching the service.
grpc::ServerWriteReactor<grpc::ByteBuffer>* NewGenerateReactor(const ServiceEnv& env,
                                                               ConnectionStreams* connections,
                                                               grpc::CallbackServerContext* ctx,
                                                               const grpc::ByteBuffer* request);

// The wire request as the request layer's GenerateRequest (text tokenized with the model's
// tokenizer); INVALID_ARGUMENT for a prompt without text or ids, text without a tokenizer, or a mode
// that is not a DecodeMode. The
// service validates it (server/request/validate.h). A pure function (fuzz/generate_request_fuzzer.cc).
absl::StatusOr<std::unique_ptr<GenerateRequest>> DecodeGenerate(const reformer::v1::GenerateRequest& wire,
                                                                 const ServedModel& model);

}  // namespace reformer::serving
