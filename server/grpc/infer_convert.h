// KServe v2 ModelInfer <-> InferenceRequest/InferenceResult, and the reformer.v1 document checks.
//
// Input rules (ModelInfer):
//  - `input_ids` INT32|INT64 [B,T] with optional `attention_mask` INT32|INT64|BOOL [B,T] (values 0/1),
//    or `text` BYTES [B] (or [B,1]), tokenized here with the model's tokenizer. Nothing else.
//  - Contents either all raw (`raw_input_contents`, one entry per input, exact byte length) or all
//    typed (`contents`); a request mixing them is INVALID_ARGUMENT.
//  - Each row is its own document: the mask marks its real tokens, padding may be on either side;
//    a mask with a hole, an empty row, or a real token id outside [0, vocab) is INVALID_ARGUMENT
//    naming row and position. A document longer than the context, or more tokens in the request
//    than the limit, is INVALID_ARGUMENT with the numbers.
//  - Outputs: logits FP32 [B,T,V], hidden_states FP32 [B,T,2H], token_logprobs FP32 [B,T],
//    embedding FP32 [B,2H]; for text also token_ids INT64 [B,T] and lengths INT32 [B]. None named =
//    all. Padding positions hold zeros (token_ids: pad_token_id). Raw little-endian contents.
//  - Parameters: `priority` (int64/uint64 >= 0), `timeout` (int64/uint64 microseconds, 0 = none).
// Errors: INVALID_ARGUMENT (bad request), NOT_FOUND (model name/version), RESOURCE_EXHAUSTED
// (response above max_response_bytes, with the numbers).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/grpc_service.pb.h"
#include "server/grpc/served_model.h"
#include "server/inference/inference_service.h"

namespace reformer::serving {

// Output tensor names of ModelInfer.
inline constexpr char kLogits[] = "logits";
inline constexpr char kHiddenStates[] = "hidden_states";
inline constexpr char kTokenLogprobs[] = "token_logprobs";
inline constexpr char kEmbedding[] = "embedding";
inline constexpr char kTokenIds[] = "token_ids";
inline constexpr char kLengths[] = "lengths";

struct ParsedInfer {
  std::vector<std::vector<int32_t>> documents;  // real tokens per row
  int64_t batch = 0;
  int64_t length = 0;             // T of the output tensors
  std::vector<int64_t> offsets;   // row r's tokens start at offsets[r] within [0, T)
  bool text_input = false;
  std::vector<std::string> output_names;  // response order
  uint32_t output_flags = 0;
  int priority = 0;
  std::optional<absl::Duration> timeout;
  int64_t total_tokens = 0;
};

// Checks the model name/version against the served model (NOT_FOUND otherwise).
absl::Status CheckModel(const ServedModel& model, const std::string& name,
                        const std::string& version);

absl::StatusOr<ParsedInfer> ParseModelInferRequest(const inference::ModelInferRequest& request,
                                                   const ServedModel& model,
                                                   const ServiceLimits& limits);

// Bytes the requested outputs will take in the response; RESOURCE_EXHAUSTED above the limit.
int64_t ResponseBytes(const ParsedInfer& parsed, const ServedModel& model);
absl::Status CheckResponseSize(const ParsedInfer& parsed, const ServedModel& model,
                               const ServiceLimits& limits);

// Fills `response` from an OK result (INTERNAL if the result does not match the request).
absl::Status BuildModelInferResponse(const ParsedInfer& parsed, const InferenceResult& result,
                                     const ServedModel& model, const std::string& id,
                                     inference::ModelInferResponse* response);

// Shared document checks (reformer.v1 and ModelInfer after mask handling): document `i` empty,
// longer than the model's context, or the sum above max_tokens_per_request -> INVALID_ARGUMENT.
// `what` names the unit in messages ("row", "document").
absl::Status CheckDocumentLengths(const std::vector<std::vector<int32_t>>& documents,
                                  const ServedModel& model, const ServiceLimits& limits,
                                  const char* what);

// Checks every id of `ids` is in [0, vocab); INVALID_ARGUMENT naming `what` `index` and the position.
absl::Status CheckTokenIds(const std::vector<int32_t>& ids, int64_t vocab, const char* what,
                           int64_t index);

// Deadline = the earlier of the RPC deadline and now + timeout (on `clock`'s time line).
// `rpc_deadline` is a system_clock time point (gRPC's); max() = none.
absl::Time EffectiveDeadline(const Clock& clock,
                             std::chrono::system_clock::time_point rpc_deadline,
                             std::optional<absl::Duration> timeout);

}  // namespace reformer::serving
