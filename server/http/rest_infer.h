// REST inference: POST /v2/models/{name}[/versions/{version}]/infer on an HTTP handler thread, over the
// same request layer as gRPC ModelInfer (docs/request-path.md): DecodeRestInfer builds the one
// InferenceRequest, InferenceService::Submit runs the one Validate and the scheduler's admission,
// the engine writes into the request's buffers, and the response is written from them once.
//
// Order: a compute slot (ComputeSlots; none free = 503) -> model and version from the path (404)
// -> serving state (503 while starting or draining) -> the body, Content-Length checked against
// the body limit before anything is read (413) -> decode (400, 404) -> submit (400; 413 for a
// request above the limits; 503 queue full or draining) -> wait, watching the connection: a client
// that disconnects cancels its request (HttpExchange::PeerGone, polled every
// `disconnect_poll`) -> the response, or 504 when the deadline (`timeout` parameter) passed, 503
// when the server could not finish it (shutting down, out of memory).
// Errors are {"error": "..."} (application/json); 503 carries Retry-After. Early answers drain a
// bounded amount of the unread body first, so a client still sending it can read them.
//
// Metrics: the same request metrics as gRPC with method="REST.ModelInfer" (one fixed label value)
// and the caller's tenant, the same reformer_rejected_total reasons ("queue_full" also counts
// requests that found every REST compute slot taken), document tokens on admission. Thread-safe
// (one call per thread).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/http/compute_slots.h"
#include "server/http/http_exchange.h"
#include "server/http/model_path.h"
#include "server/http/rest_infer_decode.h"
#include "server/request/served_model.h"

namespace reformer::serving {

inline constexpr char kRestInferMethod[] = "REST.ModelInfer";

// The default body limit: the gRPC receive limit, 16 bytes per token of max_tokens_per_request
// (INT64 ids + mask as binary, or text) + 1 MiB, which JSON of the same tokens also fits.
int64_t DefaultRestBodyBytes(const ServiceLimits& limits);

struct RestInferOptions {
  int64_t max_body_bytes = 0;  // request bodies above this: 413; 0 = DefaultRestBodyBytes
  absl::Duration body_timeout = absl::Seconds(60);          // to receive a whole body: else 408
  absl::Duration disconnect_poll = absl::Milliseconds(50);  // how often a waiting handler looks
  int64_t discard_bytes = int64_t{64} << 20;  // most unread body drained before an early answer
  absl::Duration discard_timeout = absl::Seconds(2);
};

// The HTTP status for a failed request. `admission`: refused before any computing (a request
// over the limits is then 413; RESOURCE_EXHAUSTED from computing means the server ran short: 503).
int HttpStatusOf(const absl::Status& status, bool admission);

class RestInferHandler {
 public:
  RestInferHandler(const ServiceEnv& env, const RestInferOptions& options, ComputeSlots* slots);

  // Answers the exchange completely, whatever happens; returns the HTTP status sent (0 = none:
  // the client went away). No exception leaves it. `tenant`: the caller HttpServer admitted
  // (server/http/http_server.h, Access), the tenant label of the request's metrics.
  int Handle(HttpExchange* exchange, const ModelPath& path, const std::string& tenant) const;

 private:
  struct Call;
  absl::Status Run(HttpExchange* exchange, const ModelPath& path, Call* call) const;
  absl::Status SubmitAndAnswer(HttpExchange* exchange, DecodedRestInfer decoded, Call* call) const;
  // Sends `status` as an error answer (draining the unread body first when asked).
  void Refuse(HttpExchange* exchange, const absl::Status& status, bool admission, bool discard_body,
              Call* call) const;

  const ServiceEnv env_;
  RestInferOptions options_;
  ComputeSlots* const slots_;
};

// {"error": message} with the status, Retry-After on 503 and Connection: close when asked.
void SendJsonError(HttpExchange* exchange, int status, absl::string_view message,
                   bool close = false);

}  // namespace reformer::serving
