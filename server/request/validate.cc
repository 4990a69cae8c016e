#include "server/request/validate.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace reformer::serving {
namespace {

absl::Status CheckLengths(const InferenceRequest& r, const RequestLimits& limits) {
  const Documents& docs = r.documents;
  if (docs.empty())
    return absl::InvalidArgumentError(absl::StrCat("the request has no ", r.noun, "s"));
  for (int64_t d = 0; d < docs.size(); ++d) {
    const int64_t n = docs.length(d);
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat(r.noun, " ", d, " is empty"));
    if (n > limits.context) {
      return absl::InvalidArgumentError(
          absl::StrCat(r.noun, " ", d, " has ", n, " tokens, above the model's context of ",
                       limits.context, " tokens (max_position_embeddings); split the document"));
    }
  }
  if (r.padded_length >
      limits.context) {  // padding beyond the context would only inflate the response
    return absl::InvalidArgumentError(absl::StrCat(
        r.noun, "s have ", r.padded_length, " positions, above the model's context of ",
        limits.context, " tokens (max_position_embeddings)"));
  }
  return CheckTokenCount(docs.total_tokens(), docs.size(), r.noun, limits);
}

absl::Status CheckTokenIds(const InferenceRequest& r, int64_t vocab) {
  for (int64_t d = 0; d < r.documents.size(); ++d) {
    absl::Span<const int32_t> doc = r.documents[d];
    for (size_t p = 0; p < doc.size(); ++p) {
      if (doc[p] < 0 || doc[p] >= vocab) {
        return TokenIdError(r, d, r.left_of(d) + static_cast<int64_t>(p), doc[p], vocab);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckOutputs(const InferenceRequest& r) {
  if (r.outputs.empty()) return absl::InvalidArgumentError("the request asks for no output");
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    const OutputSpec& spec = SpecOf(r.outputs[i]);
    if (std::find(r.outputs.begin(), r.outputs.begin() + i, r.outputs[i]) !=
        r.outputs.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("output '", spec.name, "' requested twice"));
    }
    if (spec.text_only && !r.text_input) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", spec.name, "' exists only for 'text' input"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckResponseSize(const InferenceRequest& r, int64_t limit) {
  const int64_t total = r.ResponseBytes();
  if (total <= limit) return absl::OkStatus();
  std::vector<std::string> parts;
  for (OutputKind kind : r.outputs) {
    parts.push_back(absl::StrCat(SpecOf(kind).name, " ", r.OutputBytes(kind)));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the requested outputs would take ", total, " bytes (", absl::StrJoin(parts, ", "),
      "), above --max_response_bytes=", limit,
      "; request fewer outputs (e.g. only 'embedding' or 'token_logprobs') or fewer tokens"));
}

}  // namespace

RequestLimits LimitsOf(const ServedModel& model, const ServiceLimits& limits) {
  return {model.context(), model.config.vocab_size, limits.max_tokens_per_request,
          limits.max_response_bytes};
}

absl::Status CheckTokenCount(int64_t tokens, int64_t documents, const char* noun,
                             const RequestLimits& limits) {
  if (tokens <= limits.max_tokens_per_request) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("the request has at least ", tokens, " tokens in ", documents, " ", noun,
                   "s, above --max_tokens_per_request=", limits.max_tokens_per_request,
                   "; send fewer documents per request"));
}

absl::Status Validate(const InferenceRequest& request, const RequestLimits& limits) {
  if (absl::Status s = CheckLengths(request, limits); !s.ok()) return s;
  if (absl::Status s = CheckTokenIds(request, limits.vocab_size); !s.ok()) return s;
  if (absl::Status s = CheckOutputs(request); !s.ok()) return s;
  return CheckResponseSize(request, limits.max_response_bytes);
}

absl::Status Validate(const GenerateRequest& r, const ReformerConfig& config,
                      const GenerateLimits& limits) {
  if (!config.is_decoder) {
    return absl::FailedPreconditionError(
        "the model is not a causal language model (is_decoder = false); it cannot generate");
  }
  if (r.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (static_cast<int64_t>(r.stop.size()) > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", r.stop.size(),
                                                   " stop strings, above the limit of ",
                                                   limits.max_stop_strings));
  }
  for (size_t i = 0; i < r.stop.size(); ++i) {
    if (static_cast<int64_t>(r.stop[i].size()) > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " has ", r.stop[i].size(),
                                                     " bytes, above the limit of ",
                                                     limits.max_stop_bytes));
    }
  }
  // The generation rules themselves: the engine's one implementation (generation.h).
  return ValidateGeneration(config, r.prompt, r.ToParams());
}

absl::Status TokenIdError(const InferenceRequest& request, int64_t document, int64_t position,
                          int64_t id, int64_t vocab) {
  return absl::InvalidArgumentError(absl::StrCat(request.noun, " ", document, " position ",
                                                 position, ": token id ", id, " outside [0, ",
                                                 vocab, ")"));
}

absl::Status CheckModel(const ServedModel& model, const std::string& name,
                        const std::string& version) {
  if (name != model.name) {
    return absl::NotFoundError(absl::StrCat(
        "model '", name, "' is not served here; this server serves '", model.name, "'"));
  }
  if (!version.empty() && version != model.version) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "'; available: '", model.version, "'"));
  }
  return absl::OkStatus();
}

}  // namespace reformer::serving
