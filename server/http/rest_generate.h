// REST generation, Triton's generate extension: POST /v2/models/{name}[/versions/{v}]/generate and
// .../generate_stream on an HTTP handler thread, a thin adapter over the GenerationService
// (server/inference/generation_service.h) like gRPC Generate (server/grpc/generate_reactor.h):
// DecodeGenerateJson (generate_json.h) builds the one GenerateRequest, the service's Submit runs the
// one Validate and admission (continuous batching with every other stream, gRPC's included).
//
//   generate         -> {"model_name", "model_version", "text_output", "output_ids", "finish_reason",
//                        "seed", "usage": {...}[, "logprobs"][, "id"]}  (new text and ids only)
//   generate_stream  -> 200 text/event-stream (chunked): one `data: {...}` event per service event
//                       (a step's new ids and its whole UTF-8 characters), the last one with
//                       finish_reason, seed and usage; an error after the head is `data: {"error"}`.
//
// Order and statuses as REST inference (rest_infer.h): a compute slot (503 when all are taken) ->
// model and version (404) -> serving state (503 while starting or draining) -> the body (413 over
// the REST body limit, 408 late) -> decode (400) -> Submit (400 invalid, 413 a cache that can never
// fit, 503 full or draining) -> the events. An error that ends the stream before anything was sent
// gets its own status (504 deadline, 503 shut down or out of memory); errors are {"error": "..."}.
// The `timeout` parameter (microseconds) is the deadline, as for REST inference.
//
// Cancellation and back-pressure. The handler thread waits for the sink's events, polling the
// connection (HttpExchange::PeerGone, every `disconnect_poll`): a client that goes away, or a write
// that fails, cancels the sequence, which the service ends before its next step (freeing its cache).
// Events handed over and not yet written count in the sink's unsent(), so a client that stops
// reading pauses its sequence at the service's max_unsent (and a write blocked that long fails after
// --http_request_timeout_s without progress); memory never grows with an unread stream. The handler always waits for
// the service's last event before it returns (the sink lives on its stack). generate_stream needs
// HTTP/1.1 (chunked transfer); HTTP/1.0 gets 505.
//
// Metrics: method "REST.Generate" / "REST.GenerateStream" in the request metrics, with the tenant.
#pragma once

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "server/http/compute_slots.h"
#include "server/http/http_exchange.h"
#include "server/http/model_path.h"
#include "server/http/rest_infer.h"
#include "server/request/served_model.h"

namespace reformer::serving {

class GenerateEventQueue;   // rest_generate.cc
struct GenerateAnswerShape;

inline constexpr char kRestGenerateMethod[] = "REST.Generate";
inline constexpr char kRestGenerateStreamMethod[] = "REST.GenerateStream";

class RestGenerateHandler {
 public:
  // `options`: the REST body limit and timeouts (shared with REST inference); `slots` borrowed.
  RestGenerateHandler(const ServiceEnv& env, const RestInferOptions& options, ComputeSlots* slots);

  // Answers the exchange completely; returns the HTTP status sent (0: the client went away).
  int Handle(HttpExchange* exchange, const ModelPath& path, const std::string& tenant, bool stream) const;

 private:
  struct Call;
  absl::Status Run(HttpExchange* exchange, const ModelPath& path, Call* call) const;
  absl::Status Submit(HttpExchange* exchange, std::string body, Call* call) const;
  absl::Status AnswerWhole(HttpExchange* exchange, const GenerateAnswerShape& shape, GenerateEventQueue* queue,
                           std::atomic<bool>* cancelled, Call* call) const;
  absl::Status AnswerStream(HttpExchange* exchange, const GenerateAnswerShape& shape, GenerateEventQueue* queue,
                            std::atomic<bool>* cancelled, Call* call) const;
  void Refuse(HttpExchange* exchange, const absl::Status& status, bool admission, bool discard_body,
              Call* call) const;

  const ServiceEnv env_;
  RestInferOptions options_;
  ComputeSlots* const slots_;
};

}  // namespace reformer::serving
