// The one validation of an InferenceRequest, whatever wire it came from (docs/request-path.md).
// InferenceService::Submit runs it right before the scheduler's admission; decoders only check that
// what a client declares (shapes, counts) matches what it sent, and never size anything from a
// declared count.
//
// Checks, in order, each with one message that names the document and the numbers:
//   INVALID_ARGUMENT   no documents; an empty document; a document longer than the model's context;
//                      padded rows longer than the context;
//                      more tokens in the request than max_tokens_per_request; a token id outside
//                      [0, vocab); no output, an output named twice, token_ids/lengths without
//                      text;
//   RESOURCE_EXHAUSTED the requested outputs above max_response_bytes (with each output's bytes).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/request/inference_request.h"
#include "server/request/served_model.h"

namespace reformer::serving {

struct RequestLimits {
  int64_t context = 0;                 // tokens per document (max_position_embeddings)
  int64_t vocab_size = 0;              // token ids in [0, vocab_size)
  int64_t max_tokens_per_request = 0;  // over a request's documents
  int64_t max_response_bytes = 0;      // the requested outputs' bytes
};

// The limits of `model` served with `limits`.
RequestLimits LimitsOf(const ServedModel& model, const ServiceLimits& limits);

absl::Status Validate(const InferenceRequest& request, const RequestLimits& limits);

// INVALID_ARGUMENT when a request's `tokens` (in `documents` documents) exceed
// max_tokens_per_request. Validate checks the final total; decoders check what they know while
// decoding (rows declared: each needs a token; tokens so far), so memory never follows a count
// beyond the limit. One check, one message.
absl::Status CheckTokenCount(int64_t tokens, int64_t documents, const char* noun,
                             const RequestLimits& limits);

// The message for a token id outside [0, vocab) at `position` of the document's row. Decoders use
// it for ids that do not even fit the int32 the request stores (Validate for all others).
absl::Status TokenIdError(const InferenceRequest& request, int64_t document, int64_t position,
                          int64_t id, int64_t vocab);

// NOT_FOUND unless `name` (and `version`, when not empty) are the served model's.
absl::Status CheckModel(const ServedModel& model, const std::string& name,
                        const std::string& version);

}  // namespace reformer::serving
