#include "server/grpc/infer_convert.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"
#include "server/batching/clock.h"

namespace reformer::serving {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using InputTensor = inference::ModelInferRequest::InferInputTensor;

// Element count of `shape`, INVALID_ARGUMENT for negative dims or absurd sizes.
absl::StatusOr<int64_t> ElementCount(const InputTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name(), "' has a negative dimension ", d));
    }
    if (d > 0 && n > (int64_t{1} << 40) / d) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "' is too large"));
    }
    n *= d;
  }
  return n;
}

std::string ShapeString(const InputTensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.shape(), ","), "]");
}

bool HasTypedContents(const InputTensor& t) {
  return t.has_contents() && t.contents().ByteSizeLong() > 0;
}

// Integer tensor (INT32, INT64, BOOL) as int64 values, from raw bytes or typed contents.
// The shape is checked against the contents before anything of the shape's size is allocated: a
// request of a few bytes may claim [2^20, 2^20] (inputs in fuzz/regressions/kserve_infer/).
absl::StatusOr<std::vector<int64_t>> ReadIntegers(const InputTensor& t, const std::string* raw,
                                                  int64_t count) {
  const std::string& dt = t.datatype();
  size_t width = dt == "INT32" ? 4 : dt == "INT64" ? 8 : dt == "BOOL" ? 1 : 0;
  if (width == 0) {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "' has datatype ", dt,
                                                   "; expected INT32, INT64 or BOOL"));
  }
  if (raw != nullptr) {
    size_t expected = static_cast<size_t>(count) * width;
    if (raw->size() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", t.name(), "': raw content has ", raw->size(), " bytes, shape ",
          ShapeString(t), " of ", dt, " needs ", expected));
    }
    std::vector<int64_t> values(static_cast<size_t>(count));
    const char* p = raw->data();
    for (int64_t i = 0; i < count; ++i) {
      if (width == 4) {
        int32_t v;
        std::memcpy(&v, p + i * 4, 4);
        values[i] = v;
      } else if (width == 8) {
        int64_t v;
        std::memcpy(&v, p + i * 8, 8);
        values[i] = v;
      } else {
        values[i] = static_cast<unsigned char>(p[i]);
      }
    }
    return values;
  }
  const inference::InferTensorContents& c = t.contents();
  int64_t got = dt == "INT32" ? c.int_contents_size()
                : dt == "INT64" ? c.int64_contents_size()
                                : c.bool_contents_size();
  if (got != count) {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': ", got,
                                                   " typed elements, shape ", ShapeString(t),
                                                   " needs ", count));
  }
  std::vector<int64_t> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    values[i] = dt == "INT32" ? c.int_contents(i)
                : dt == "INT64" ? c.int64_contents(i)
                                : (c.bool_contents(i) ? 1 : 0);
  }
  return values;
}

absl::StatusOr<std::vector<std::string>> ReadStrings(const InputTensor& t, const std::string* raw,
                                                     int64_t count) {
  if (t.datatype() != "BYTES") {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", t.name(), "' has datatype ", t.datatype(), "; expected BYTES"));
  }
  std::vector<std::string> out;
  if (raw == nullptr) {
    if (t.contents().bytes_contents_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", t.name(), "': ", t.contents().bytes_contents_size(),
          " typed elements, shape ", ShapeString(t), " needs ", count));
    }
    for (const std::string& s : t.contents().bytes_contents()) out.push_back(s);
    return out;
  }
  // Each raw element takes at least its 4-byte length: a larger count cannot be there.
  if (static_cast<uint64_t>(count) > raw->size() / 4) {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': raw BYTES content has ",
                                                   raw->size(), " bytes, too few for ", count,
                                                   " elements of shape ", ShapeString(t)));
  }
  out.reserve(static_cast<size_t>(count));
  size_t pos = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (raw->size() - pos < 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", t.name(), "': raw BYTES content ends before element ", i, " of ", count));
    }
    uint32_t len;
    std::memcpy(&len, raw->data() + pos, 4);
    pos += 4;
    if (raw->size() - pos < len) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': raw BYTES element ",
                                                     i, " claims ", len, " bytes, only ",
                                                     raw->size() - pos, " left"));
    }
    out.emplace_back(raw->data() + pos, len);
    pos += len;
  }
  if (pos != raw->size()) {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': raw BYTES content has ",
                                                   raw->size() - pos, " bytes after element ",
                                                   count - 1));
  }
  return out;
}

absl::StatusOr<std::optional<int64_t>> IntParameter(
    const google::protobuf::Map<std::string, InferParameter>& params, const std::string& name) {
  auto it = params.find(name);
  if (it == params.end()) return std::optional<int64_t>();
  const InferParameter& p = it->second;
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      if (p.int64_param() < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter '", name, "' must be >= 0, got ", p.int64_param()));
      }
      return std::optional<int64_t>(p.int64_param());
    case InferParameter::kUint64Param:
      return std::optional<int64_t>(static_cast<int64_t>(
          std::min<uint64_t>(p.uint64_param(), std::numeric_limits<int64_t>::max())));
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "' must be an int64 or uint64 parameter"));
  }
}

struct OutputSpec {
  const char* name;
  uint32_t flag;
};
constexpr OutputSpec kOutputs[] = {{kLogits, kOutputLogits},
                                   {kHiddenStates, kOutputHiddenStates},
                                   {kTokenLogprobs, kOutputTokenLogprobs},
                                   {kEmbedding, kOutputEmbedding},
                                   {kTokenIds, 0},
                                   {kLengths, 0}};

void AppendFloats(const std::vector<float>& src, std::string* dst, size_t offset_floats) {
  if (src.empty()) return;
  std::memcpy(dst->data() + offset_floats * sizeof(float), src.data(), src.size() * sizeof(float));
}

}  // namespace

absl::Status CheckModel(const ServedModel& model, const std::string& name,
                        const std::string& version) {
  if (name != model.name) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' is not served here; this server serves '", model.name, "'"));
  }
  if (!version.empty() && version != model.version) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "'; available: '", model.version, "'"));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenIds(const std::vector<int32_t>& ids, int64_t vocab, const char* what,
                           int64_t index) {
  for (size_t p = 0; p < ids.size(); ++p) {
    if (ids[p] < 0 || ids[p] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", index, " position ", p,
                                                     ": token id ", ids[p], " outside [0, ",
                                                     vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDocumentLengths(const std::vector<std::vector<int32_t>>& documents,
                                  const ServedModel& model, const ServiceLimits& limits,
                                  const char* what) {
  if (documents.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the request has no ", what, "s"));
  }
  int64_t total = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    int64_t n = static_cast<int64_t>(documents[i].size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat(what, " ", i, " is empty"));
    if (n > model.context()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", i, " has ", n, " tokens, above the model's context of ", model.context(),
          " tokens (max_position_embeddings); split the document"));
    }
    total += n;
  }
  if (limits.max_tokens_per_request > 0 && total > limits.max_tokens_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request has ", total, " tokens in ", documents.size(), " ", what,
        "s, above --max_tokens_per_request=", limits.max_tokens_per_request,
        "; send fewer documents per request"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedInfer> ParseModelInferRequest(const ModelInferRequest& request,
                                                   const ServedModel& model,
                                                   const ServiceLimits& limits) {
  RETURN_IF_ERROR(CheckModel(model, request.model_name(), request.model_version()));
  ParsedInfer parsed;

  // Parameters.
  ASSIGN_OR_RETURN(std::optional<int64_t> priority, IntParameter(request.parameters(), "priority"));
  if (priority) parsed.priority = static_cast<int>(std::min<int64_t>(*priority, 1 << 30));
  ASSIGN_OR_RETURN(std::optional<int64_t> timeout_us, IntParameter(request.parameters(), "timeout"));
  if (timeout_us && *timeout_us > 0) parsed.timeout = absl::Microseconds(*timeout_us);

  // Inputs: raw xor typed.
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
        request.inputs_size(), " inputs; give one per input, in order"));
  }
  const InputTensor* ids_t = nullptr;
  const InputTensor* mask_t = nullptr;
  const InputTensor* text_t = nullptr;
  const std::string* ids_raw = nullptr;
  const std::string* mask_raw = nullptr;
  const std::string* text_raw = nullptr;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& t = request.inputs(i);
    if (raw && HasTypedContents(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", t.name(), "' has typed contents while raw_input_contents is used; a request "
          "must use one or the other"));
    }
    const std::string* r = raw ? &request.raw_input_contents(i) : nullptr;
    const InputTensor** slot = nullptr;
    const std::string** raw_slot = nullptr;
    if (t.name() == "input_ids") {
      slot = &ids_t;
      raw_slot = &ids_raw;
    } else if (t.name() == "attention_mask") {
      slot = &mask_t;
      raw_slot = &mask_raw;
    } else if (t.name() == "text") {
      slot = &text_t;
      raw_slot = &text_raw;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input '", t.name(), "'; inputs are input_ids, attention_mask, text"));
    }
    if (*slot != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "' given twice"));
    }
    *slot = &t;
    *raw_slot = r;
  }

  if (text_t != nullptr) {
    if (ids_t != nullptr || mask_t != nullptr) {
      return absl::InvalidArgumentError(
          "give either 'text' or 'input_ids' (with optional 'attention_mask'), not both");
    }
    if (model.tokenizer == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", model.name, "' has no tokenizer; send 'input_ids' instead of 'text'"));
    }
    const auto& shape = text_t->shape();
    if (!(shape.size() == 1 || (shape.size() == 2 && shape[1] == 1))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'text' must have shape [B] or [B,1], got ", ShapeString(*text_t)));
    }
    ASSIGN_OR_RETURN(int64_t count, ElementCount(*text_t));
    ASSIGN_OR_RETURN(std::vector<std::string> texts, ReadStrings(*text_t, text_raw, count));
    parsed.text_input = true;
    parsed.batch = count;
    for (int64_t r = 0; r < count; ++r) {
      absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(texts[r]);
      if (!ids.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("text row ", r, ": ", ids.status().message()));
      }
      if (ids->empty()) {
        return absl::InvalidArgumentError(absl::StrCat("text row ", r, " is empty (no tokens)"));
      }
      RETURN_IF_ERROR(CheckTokenIds(*ids, model.config.vocab_size, "text row", r));
      parsed.length = std::max<int64_t>(parsed.length, static_cast<int64_t>(ids->size()));
      parsed.documents.push_back(*std::move(ids));
      parsed.offsets.push_back(0);
    }
  } else if (ids_t != nullptr) {
    if (ids_t->shape_size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("input 'input_ids' must have shape [B,T], got ", ShapeString(*ids_t)));
    }
    if (ids_t->datatype() != "INT32" && ids_t->datatype() != "INT64") {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'input_ids' has datatype ", ids_t->datatype(), "; expected INT32 or INT64"));
    }
    const int64_t b = ids_t->shape(0);
    const int64_t t = ids_t->shape(1);
    ASSIGN_OR_RETURN(int64_t count, ElementCount(*ids_t));
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, ReadIntegers(*ids_t, ids_raw, count));
    std::vector<int64_t> mask;
    if (mask_t != nullptr) {
      if (mask_t->shape_size() != 2 || mask_t->shape(0) != b || mask_t->shape(1) != t) {
        return absl::InvalidArgumentError(absl::StrCat("input 'attention_mask' has shape ",
                                                       ShapeString(*mask_t), ", input_ids ",
                                                       ShapeString(*ids_t), "; they must match"));
      }
      if (mask_t->datatype() != "INT32" && mask_t->datatype() != "INT64" &&
          mask_t->datatype() != "BOOL") {
        return absl::InvalidArgumentError(
            absl::StrCat("input 'attention_mask' has datatype ", mask_t->datatype(),
                         "; expected INT32, INT64 or BOOL"));
      }
      ASSIGN_OR_RETURN(mask, ReadIntegers(*mask_t, mask_raw, count));
    }
    if (b == 0) return absl::InvalidArgumentError("input 'input_ids' has no rows (B = 0)");
    parsed.batch = b;
    parsed.length = t;
    const int64_t vocab = model.config.vocab_size;
    for (int64_t r = 0; r < b; ++r) {
      int64_t first = t, last = -1;
      if (mask.empty()) {
        first = 0;
        last = t - 1;
      } else {
        for (int64_t p = 0; p < t; ++p) {
          int64_t m = mask[r * t + p];
          if (m != 0 && m != 1) {
            return absl::InvalidArgumentError(absl::StrCat("attention_mask row ", r, " position ",
                                                           p, ": value ", m, " is not 0 or 1"));
          }
          if (m == 1) {
            first = std::min(first, p);
            last = p;
          }
        }
      }
      if (last < first) {
        return absl::InvalidArgumentError(
            absl::StrCat("row ", r, " is empty (", t == 0 ? "T = 0" : "attention_mask is all 0",
                         ")"));
      }
      for (int64_t p = first; p <= last; ++p) {
        if (!mask.empty() && mask[r * t + p] == 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "attention_mask row ", r, " has a hole at position ", p,
              ": a row's real tokens must be contiguous (padding only before or after them)"));
        }
      }
      std::vector<int32_t> doc;
      doc.reserve(static_cast<size_t>(last - first + 1));
      for (int64_t p = first; p <= last; ++p) {
        int64_t id = ids[r * t + p];
        if (id < 0 || id >= vocab) {
          return absl::InvalidArgumentError(absl::StrCat("input_ids row ", r, " position ", p,
                                                         ": token id ", id, " outside [0, ",
                                                         vocab, ")"));
        }
        doc.push_back(static_cast<int32_t>(id));
      }
      parsed.documents.push_back(std::move(doc));
      parsed.offsets.push_back(first);
    }
  } else {
    return absl::InvalidArgumentError(
        "missing input: give 'input_ids' (INT32/INT64 [B,T], optional 'attention_mask') or "
        "'text' (BYTES [B])");
  }
  RETURN_IF_ERROR(CheckDocumentLengths(parsed.documents, model, limits, "row"));
  for (const auto& d : parsed.documents) parsed.total_tokens += static_cast<int64_t>(d.size());

  // Outputs.
  if (request.outputs_size() == 0) {
    for (const OutputSpec& spec : kOutputs) {
      if (spec.flag == 0 && !parsed.text_input) continue;
      parsed.output_names.push_back(spec.name);
      parsed.output_flags |= spec.flag;
    }
  } else {
    for (const auto& out : request.outputs()) {
      const OutputSpec* found = nullptr;
      for (const OutputSpec& spec : kOutputs) {
        if (out.name() == spec.name) found = &spec;
      }
      if (found == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown output '", out.name(),
            "'; outputs are logits, hidden_states, token_logprobs, embedding (and token_ids, "
            "lengths for text input)"));
      }
      if (found->flag == 0 && !parsed.text_input) {
        return absl::InvalidArgumentError(
            absl::StrCat("output '", out.name(), "' exists only for 'text' input"));
      }
      if (std::find(parsed.output_names.begin(), parsed.output_names.end(), out.name()) !=
          parsed.output_names.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("output '", out.name(), "' requested twice"));
      }
      parsed.output_names.push_back(out.name());
      parsed.output_flags |= found->flag;
    }
  }
  // Only token_ids/lengths asked: the engine still runs the cheapest output so that the
  // request goes through the same admission and ordering as any other.
  if (parsed.output_flags == 0) parsed.output_flags = kOutputEmbedding;
  return parsed;
}

namespace {

int64_t OutputBytes(const std::string& name, const ParsedInfer& p, const ServedModel& m) {
  const int64_t bt = p.batch * p.length;
  if (name == kLogits) return bt * m.config.vocab_size * 4;
  if (name == kHiddenStates) return bt * m.embedding_size() * 4;
  if (name == kTokenLogprobs) return bt * 4;
  if (name == kEmbedding) return p.batch * m.embedding_size() * 4;
  if (name == kTokenIds) return bt * 8;
  if (name == kLengths) return p.batch * 4;
  return 0;
}

}  // namespace

int64_t ResponseBytes(const ParsedInfer& parsed, const ServedModel& model) {
  int64_t total = 0;
  for (const std::string& name : parsed.output_names) total += OutputBytes(name, parsed, model);
  return total;
}

absl::Status CheckResponseSize(const ParsedInfer& parsed, const ServedModel& model,
                               const ServiceLimits& limits) {
  const int64_t total = ResponseBytes(parsed, model);
  if (total <= limits.max_response_bytes) return absl::OkStatus();
  std::vector<std::string> parts;
  for (const std::string& name : parsed.output_names) {
    parts.push_back(absl::StrCat(name, " ", OutputBytes(name, parsed, model)));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the requested outputs would take ", total, " bytes (", absl::StrJoin(parts, ", "),
      "), above --max_response_bytes=", limits.max_response_bytes,
      "; request fewer outputs (e.g. only 'embedding' or 'token_logprobs') or fewer tokens"));
}

absl::Status BuildModelInferResponse(const ParsedInfer& parsed, const InferenceResult& result,
                                     const ServedModel& model, const std::string& id,
                                     ModelInferResponse* response) {
  if (result.outputs.size() != parsed.documents.size()) {
    return absl::InternalError(absl::StrCat("engine returned ", result.outputs.size(),
                                            " documents for ", parsed.documents.size()));
  }
  response->set_model_name(model.name);
  response->set_model_version(model.version);
  response->set_id(id);
  const int64_t b = parsed.batch, t = parsed.length;
  const int64_t v = model.config.vocab_size, e = model.embedding_size();
  for (const std::string& name : parsed.output_names) {
    auto* out = response->add_outputs();
    out->set_name(name);
    std::string* raw = response->add_raw_output_contents();
    raw->assign(static_cast<size_t>(OutputBytes(name, parsed, model)), '\0');
    int64_t width = 0;  // floats per token, or 0 for per-document outputs
    if (name == kLogits) {
      width = v;
    } else if (name == kHiddenStates) {
      width = e;
    } else if (name == kTokenLogprobs) {
      width = 1;
    }
    if (width > 0) {
      out->set_datatype("FP32");
      out->add_shape(b);
      out->add_shape(t);
      if (name != kTokenLogprobs) out->add_shape(width);
      for (int64_t r = 0; r < b; ++r) {
        const DocumentOutput& d = result.outputs[r];
        const std::vector<float>& src = name == kLogits         ? d.logits
                                        : name == kHiddenStates ? d.hidden_states
                                                                : d.token_logprobs;
        const size_t n = parsed.documents[r].size();
        if (src.size() != n * static_cast<size_t>(width)) {
          return absl::InternalError(absl::StrCat("engine output '", name, "' for row ", r,
                                                  " has ", src.size(), " values, expected ",
                                                  n * width));
        }
        AppendFloats(src, raw, static_cast<size_t>((r * t + parsed.offsets[r]) * width));
      }
    } else if (name == kEmbedding) {
      out->set_datatype("FP32");
      out->add_shape(b);
      out->add_shape(e);
      for (int64_t r = 0; r < b; ++r) {
        const std::vector<float>& src = result.outputs[r].embedding;
        if (static_cast<int64_t>(src.size()) != e) {
          return absl::InternalError(absl::StrCat("engine embedding for row ", r, " has ",
                                                  src.size(), " values, expected ", e));
        }
        AppendFloats(src, raw, static_cast<size_t>(r * e));
      }
    } else if (name == kTokenIds) {
      out->set_datatype("INT64");
      out->add_shape(b);
      out->add_shape(t);
      for (int64_t r = 0; r < b; ++r) {
        for (int64_t p = 0; p < t; ++p) {
          const auto& doc = parsed.documents[r];
          int64_t value = p < static_cast<int64_t>(doc.size()) ? doc[p] : model.config.pad_token_id;
          std::memcpy(raw->data() + (r * t + p) * 8, &value, 8);
        }
      }
    } else if (name == kLengths) {
      out->set_datatype("INT32");
      out->add_shape(b);
      for (int64_t r = 0; r < b; ++r) {
        int32_t len = static_cast<int32_t>(parsed.documents[r].size());
        std::memcpy(raw->data() + r * 4, &len, 4);
      }
    }
  }
  auto& params = *response->mutable_parameters();
  params["tokens"].set_int64_param(result.tokens > 0 ? result.tokens : parsed.total_tokens);
  params["queue_ms"].set_double_param(result.queue_seconds * 1e3);
  params["compute_ms"].set_double_param(result.compute_seconds * 1e3);
  return absl::OkStatus();
}

absl::Time EffectiveDeadline(const Clock& clock,
                             std::chrono::system_clock::time_point rpc_deadline,
                             std::optional<absl::Duration> timeout) {
  const absl::Time now = clock.Now();
  absl::Time deadline = absl::InfiniteFuture();
  if (rpc_deadline != std::chrono::system_clock::time_point::max()) {
    const auto remaining = rpc_deadline - std::chrono::system_clock::now();
    // Deadlines beyond a year are "none" (and keep the conversion far from overflow).
    if (remaining < std::chrono::hours(24 * 365)) {
      deadline = now + absl::FromChrono(
                           std::chrono::duration_cast<std::chrono::nanoseconds>(remaining));
    }
  }
  if (timeout) deadline = std::min(deadline, now + *timeout);
  return deadline;
}

}  // namespace reformer::serving
