// POST /v2/models/{name}[/versions/{version}]/infer: the request's path, binary-data header and
// body -> an InferenceRequest. A pure function of its input (no connection, no clock, no
// globals), so it can be tested and fuzzed on bytes alone.
//
// The body is the Open Inference Protocol inference request JSON object; with the binary tensor
// data extension (summarised in third_party/kserve/README.md) the header
// `Inference-Header-Content-Length` gives the JSON's length and the binary tensors follow it, in
// the order of the inputs that carry `parameters.binary_data_size` (little-endian,
// row-major; BYTES as 4-byte little-endian lengths each followed by the bytes).
//
// This file knows only the REST way of carrying tensors: JSON `data` (flat or nested; numbers and
// booleans for INT32/INT64/BOOL, strings for BYTES) or an exact binary slice. What the tensors mean
// is server/request/tensor_inputs.h (the rules and messages gRPC uses too), and the request is
// then validated once, by InferenceService::Submit (server/request/validate.h).
//
// Checked before anything is sized: the JSON is streamed (infer_json.h), every declared count is
// compared with what was sent (JSON elements, binary bytes), the binary sizes must add up exactly
// to the bytes after the JSON, and rows and text are held to max_tokens_per_request.
// Outputs: `outputs[].parameters.binary_data` chooses binary for one output,
// `parameters.binary_data_output` for all (an output's own choice wins); none named = all outputs.
// Parameters: `priority` (integer >= 0), `timeout` (integer microseconds >= 0, 0 = none).
// Errors: INVALID_ARGUMENT (malformed body, shapes, datatypes, sizes), NOT_FOUND (model/version).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/request/inference_request.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace reformer::serving {

struct RestInferInput {
  absl::string_view model_name;     // from the path
  absl::string_view model_version;  // from the path; empty = any
  absl::string_view body;
  // Inference-Header-Content-Length as sent; nullopt when the header is absent.
  std::optional<absl::string_view> header_length;
};

struct DecodedRestInfer {
  std::unique_ptr<InferenceRequest> request;
  std::optional<absl::Duration> timeout;  // the `timeout` parameter
  std::vector<bool> binary;               // per request->outputs: answer as binary data
};

absl::StatusOr<DecodedRestInfer> DecodeRestInfer(const RestInferInput& input,
                                                 const ServedModel& model,
                                                 const RequestLimits& limits);

}  // namespace reformer::serving
