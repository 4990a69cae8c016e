// The body of Triton's generate extension (POST /v2/models/{name}/generate and generate_stream) read
// into the request layer's GenerateRequest (server/request/generate_request.h), which the
// GenerationService then checks with the one Validate (server/request/validate.h). A streaming
// (SAX) parser: there is never a DOM of the body.
//
//   {"text_input": "...",                  (or "input_ids": [ids...] for models without a tokenizer)
//    "parameters": {"max_tokens": N, "temperature": T, "top_k": K, "top_p": P, "seed": S,
//                   "stop": "s" | ["s", ...], "mode": "cached" | "recompute", "ignore_eos": B,
//                   "return_logprobs": B, "priority": N, "timeout": MICROSECONDS, "stream": B},
//    "id": "..."}
// The parameters may also stand at the top level (Triton's TensorRT-LLM examples put max_tokens
// there); one given twice, in either place, is an error. max_tokens defaults to 16 (Triton's vLLM
// backend's default). Unknown keys are errors that list the known ones (a misspelt parameter must not
// fall back to a default silently).
//
// Memory follows the body (bounded by the REST body limit before it is read): input_ids stop at the
// model's context and stop strings at GenerateLimits::max_stop_strings while parsing; nothing is
// sized from a declared count. Numbers are not range-checked here beyond what the request's field
// types hold (Validate does that, with the numbers): integers beyond a field's type are clamped to it
// and numbers beyond float to infinity, which Validate then refuses. Errors: INVALID_ARGUMENT saying
// which key. A pure function (fuzz/generate_json_fuzzer.cc).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/request/generate_request.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace reformer::serving {

inline constexpr int64_t kDefaultMaxTokens = 16;

struct DecodedGenerateJson {
  std::unique_ptr<GenerateRequest> request;  // text already tokenized
  std::optional<absl::Duration> timeout;     // the `timeout` parameter; nullopt = none
  std::optional<bool> stream;                // the `stream` parameter, when given
};

absl::StatusOr<DecodedGenerateJson> DecodeGenerateJson(absl::string_view body, const ServedModel& model,
                                                       const GenerateLimits& limits);

}  // namespace reformer::serving
