// ModelStreamInfer (Triton's bidirectional stream), on raw bytes.
//
// Each message read is one ModelInferRequest, decoded and submitted as ModelInfer would be; its
// answer is one ModelStreamInferResponse (built without copying the outputs, infer_encode.h),
// written in completion order, one write in flight at a time. A bad message (not a
// ModelInferRequest, a shape that does not match its bytes, an unknown model, a full queue, ...) is
// answered with `error_message` and its `id` echoed, and the stream keeps serving, as Triton does.
//
// Bounds: the stream reads no further message while it owes `max_unsent_responses` responses
// (requests accepted and not yet answered, plus answers not yet written) or while those responses
// take `max_unsent_bytes` or more (pending ones counted at their full size). A client that sends
// but does not read is thus paced by gRPC flow control instead of piling up responses here.
//
// Stalls: a response write the client has not taken for `stalled_timeout` (on the injected clock,
// polled at least once a second) ends the stream RESOURCE_EXHAUSTED, counted in the gRPC metrics
// under that code: its queued responses and their memory-budget holds are freed at once, its
// pending requests cancelled and the call cancelled (a client that never reads cannot take the
// status behind its unread message, so it sees CANCELLED).
//
// Authentication (auth.h): a call without a valid bearer token is finished UNAUTHENTICATED before
// any message is read; the tenant of an accepted one labels its requests in the metrics.
//
// Finishing: exactly once, when the client has half-closed (or the call was cancelled, or a write
// failed), every accepted request was answered, and no read or write is in flight. Cancellation by
// the client, or by the server at its shutdown deadline, cancels every pending request of the
// stream and drops unsent responses. No exception leaves a reaction: one raised while handling a
// message answers that message (RESOURCE_EXHAUSTED when out of memory, INTERNAL otherwise).
#pragma once

#include <cstdint>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/request/served_model.h"

namespace reformer::serving {

struct StreamLimits {
  int64_t max_unsent_responses = 16;
  int64_t max_unsent_bytes = int64_t{64} << 20;
  absl::Duration stalled_timeout = absl::Seconds(60);
};

// A reactor for one ModelStreamInfer call; it deletes itself when the call is done.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewStreamInferReactor(
    const ServiceEnv& env, const StreamLimits& limits, grpc::CallbackServerContext* ctx);

}  // namespace reformer::serving
