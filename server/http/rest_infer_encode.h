// The REST inference response (Open Inference Protocol `inference_response`), written once from the
// request's response buffers.
//
// JSON outputs: `data` is a flat row-major array formatted as it streams to the client (JsonWriter:
// bounded memory; floats in their shortest exact form, so float32(parse(text)) is the engine's
// value bit for bit). Binary outputs (binary tensor data extension): the JSON object carries
// `parameters.binary_data_size` instead of `data`, and the output's buffer follows the JSON as it
// is, straight from the buffer the engine wrote to the socket (no copy). Body = the JSON, then the
// binary outputs in output order; `Inference-Header-Content-Length` = the JSON's length.
//
// How the body is framed: with any binary output, Content-Length (the JSON's length counted by a
// formatting pass first, cheap when its outputs are binary); all-JSON answers to HTTP/1.1 clients
// stream chunked (Content-Length when they fit one 64 KiB piece); to HTTP/1.0 clients with a
// counted Content-Length.
// Response parameters: `tokens` (real tokens run), `queue_ms`, `compute_ms`, as over gRPC.
#pragma once

#include <vector>

#include "server/http/http_exchange.h"
#include "server/http/json_writer.h"
#include "server/inference/inference_service.h"
#include "server/request/served_model.h"

namespace reformer::serving {

// The response JSON object of an OK result; `binary[i]` = output i is sent as binary data.
void WriteInferResponseJson(const InferenceResult& result, const ServedModel& model,
                            const std::vector<bool>& binary, JsonWriter* w);

// Sends the whole 200 response; false when the client went away while it was being written.
bool SendInferResponse(HttpExchange* exchange, InferenceResult& result, const ServedModel& model,
                       const std::vector<bool>& binary);

}  // namespace reformer::serving
