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
//
// Generation requests (GenerateRequest) have their own overload, the one check of Generate and the
// HTTP generate endpoints, in this order:
//   FAILED_PRECONDITION the model is not causal (it cannot generate);
//   INVALID_ARGUMENT    an empty prompt; more than max_stop_strings stop strings or one longer than
//                       max_stop_bytes; then the engine's generation rules (ValidateGeneration,
//                       engine/model/generation.h, the one implementation of them): max_new_tokens
//                       < 1, prompt + max_new_tokens beyond the context (or a forward's padded
//                       length beyond it), a prompt id outside [0, vocab), temperature < 0 or not
//                       finite, top_k < 0, top_p outside [0, 1], an empty stop string.
// Each message names the numbers.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "engine/model/config.h"
#include "server/request/generate_request.h"
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

// Bounds of a generation request's stop strings (each is searched for at every step).
struct GenerateLimits {
  int64_t max_stop_strings = 16;
  int64_t max_stop_bytes = 256;
};

// The one check of a generation request against the served model's `config` (see the file comment).
absl::Status Validate(const GenerateRequest& request, const ReformerConfig& config,
                      const GenerateLimits& limits = {});

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
