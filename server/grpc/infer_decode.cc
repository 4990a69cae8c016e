#include "server/grpc/infer_decode.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"
#include "server/request/checked_math.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using InputTensor = ModelInferRequest::InferInputTensor;

// One input tensor and its raw contents (nullptr when the request uses typed contents).
struct TensorInput {
  const InputTensor* tensor = nullptr;
  const std::string* raw = nullptr;
  explicit operator bool() const { return tensor != nullptr; }
};

struct Inputs {
  TensorInput ids, mask, text;
};

std::string ShapeString(const InputTensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.shape(), ","), "]");
}

// Element count of `t`'s declared shape (not yet checked against anything sent).
absl::StatusOr<int64_t> ElementCount(const InputTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    std::optional<int64_t> next = CheckedMul(n, d);
    if (d < 0 || !next) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name(), "' has shape ", ShapeString(t),
                       d < 0 ? ": a negative dimension" : ": too many elements"));
    }
    n = *next;
  }
  return n;
}

bool HasTypedContents(const InputTensor& t) {
  return t.has_contents() && t.contents().ByteSizeLong() > 0;
}

absl::StatusOr<Inputs> BindInputs(const ModelInferRequest& request) {
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
                     request.inputs_size(), " inputs; give one per input, in order"));
  }
  Inputs in;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& t = request.inputs(i);
    if (raw && HasTypedContents(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name(),
                       "' has typed contents while raw_input_contents is used; "
                       "a request must use one or the other"));
    }
    TensorInput* slot = t.name() == "input_ids"        ? &in.ids
                        : t.name() == "attention_mask" ? &in.mask
                        : t.name() == "text"           ? &in.text
                                                       : nullptr;
    if (slot == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input '", t.name(), "'; inputs are input_ids, attention_mask, text"));
    }
    if (*slot)
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "' given twice"));
    *slot = {&t, raw ? &request.raw_input_contents(i) : nullptr};
  }
  return in;
}

// An integer tensor (INT32, INT64 or BOOL) read in place from its raw bytes or typed contents, once
// its element count is known to match what was sent.
class IntReader {
 public:
  static absl::StatusOr<IntReader> Make(const TensorInput& in, int64_t count, bool allow_bool);
  int64_t operator[](int64_t i) const {
    if (raw_ != nullptr) {
      if (type_ == DataType::kInt64) return Load<int64_t>(i);
      if (type_ == DataType::kInt32) return Load<int32_t>(i);
      return static_cast<unsigned char>(raw_[i]);
    }
    if (type_ == DataType::kInt64) return typed_->int64_contents(static_cast<int>(i));
    if (type_ == DataType::kInt32) return typed_->int_contents(static_cast<int>(i));
    return typed_->bool_contents(static_cast<int>(i)) ? 1 : 0;
  }

 private:
  template <typename T>
  int64_t Load(int64_t i) const {
    T v;
    std::memcpy(&v, raw_ + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    return v;
  }
  DataType type_ = DataType::kInt64;
  const char* raw_ = nullptr;
  const inference::InferTensorContents* typed_ = nullptr;
};

absl::StatusOr<IntReader> IntReader::Make(const TensorInput& in, int64_t count, bool allow_bool) {
  const InputTensor& t = *in.tensor;
  const std::string& dt = t.datatype();
  IntReader r;
  if (dt == "INT32" || dt == "INT64" || (allow_bool && dt == "BOOL")) {
    r.type_ = dt == "INT32" ? DataType::kInt32 : dt == "INT64" ? DataType::kInt64 : DataType::kBool;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "' has datatype ", dt,
                                                   "; expected INT32",
                                                   allow_bool ? ", INT64 or BOOL" : " or INT64"));
  }
  if (in.raw != nullptr) {
    std::optional<int64_t> expected = CheckedMul(count, DataTypeSize(r.type_));
    if (!expected || *expected != static_cast<int64_t>(in.raw->size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name(), "': raw content has ", in.raw->size(), " bytes, shape ",
                       ShapeString(t), " of ", dt, " needs ",
                       expected ? absl::StrCat(*expected) : std::string("more than 2^63")));
    }
    r.raw_ = in.raw->data();
    return r;
  }
  const inference::InferTensorContents& c = t.contents();
  const int64_t got = r.type_ == DataType::kInt32   ? c.int_contents_size()
                      : r.type_ == DataType::kInt64 ? c.int64_contents_size()
                                                    : c.bool_contents_size();
  if (got != count) {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': ", got,
                                                   " typed elements, shape ", ShapeString(t),
                                                   " needs ", count));
  }
  r.typed_ = &c;
  return r;
}

// Row r's real tokens under `mask`: {first position, count}; {0, 0} for an all-zero row.
absl::StatusOr<std::pair<int64_t, int64_t>> MaskSpan(const IntReader& mask, int64_t r, int64_t t) {
  int64_t first = -1, last = -1;
  for (int64_t p = 0; p < t; ++p) {
    const int64_t m = mask[r * t + p];
    if (m != 0 && m != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention_mask row ", r, " position ", p, ": value ", m, " is not 0 or 1"));
    }
    if (m == 1) {
      if (first < 0) first = p;
      last = p;
    }
  }
  if (first < 0) return std::make_pair(int64_t{0}, int64_t{0});
  for (int64_t p = first; p <= last; ++p) {
    if (mask[r * t + p] == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attention_mask row ", r, " has a hole at position ", p,
          ": a row's real tokens must be contiguous (padding only before or after them)"));
    }
  }
  return std::make_pair(first, last - first + 1);
}

// Copies row r's real tokens into a new document (int32, as the engine reads them).
absl::Status AppendRow(const IntReader& ids, int64_t r, int64_t t, int64_t first, int64_t n,
                       InferenceRequest* request) {
  int32_t* dst = request->documents.Append(n);
  for (int64_t p = 0; p < n; ++p) {
    const int64_t id = ids[r * t + first + p];
    if (id != static_cast<int32_t>(id))
      return TokenIdError(*request, r, first + p, id, request->dims.vocab);
    dst[p] = static_cast<int32_t>(id);
  }
  return absl::OkStatus();
}

absl::Status DecodeIds(const Inputs& in, const RequestLimits& limits, InferenceRequest* request) {
  const InputTensor& ids_t = *in.ids.tensor;
  if (ids_t.shape_size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'input_ids' must have shape [B,T], got ", ShapeString(ids_t)));
  }
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(ids_t));
  const int64_t b = ids_t.shape(0), t = ids_t.shape(1);
  if (t == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'input_ids' has shape ", ShapeString(ids_t), ": rows need at least one token"));
  }
  ASSIGN_OR_RETURN(const IntReader ids, IntReader::Make(in.ids, count, /*allow_bool=*/false));
  RETURN_IF_ERROR(CheckTokenCount(b, b, "row", limits));
  std::optional<IntReader> mask;
  if (in.mask) {
    const InputTensor& m = *in.mask.tensor;
    if (m.shape_size() != 2 || m.shape(0) != b || m.shape(1) != t) {
      return absl::InvalidArgumentError(absl::StrCat("input 'attention_mask' has shape ",
                                                     ShapeString(m), ", input_ids ",
                                                     ShapeString(ids_t), "; they must match"));
    }
    ASSIGN_OR_RETURN(mask, IntReader::Make(in.mask, count, /*allow_bool=*/true));
  }
  // From here on every declared element was sent: b <= count, and sizes follow the bytes.
  std::vector<std::pair<int64_t, int64_t>> rows(static_cast<size_t>(b), {0, t});
  int64_t total = 0;
  for (int64_t r = 0; r < b; ++r) {
    if (mask) {
      ASSIGN_OR_RETURN(rows[r], MaskSpan(*mask, r, t));
    }
    total += rows[r].second;
  }
  request->noun = "row";
  request->padded_length = t;
  request->documents.Reserve(b, total);
  request->left.reserve(static_cast<size_t>(b));
  for (int64_t r = 0; r < b; ++r) {
    request->left.push_back(rows[r].first);
    RETURN_IF_ERROR(AppendRow(ids, r, t, rows[r].first, rows[r].second, request));
  }
  return absl::OkStatus();
}

// The `count` strings of a BYTES tensor, as views into the request; `count` is checked against
// what was sent, then against the row limit, before anything is sized.
absl::StatusOr<std::vector<absl::string_view>> ReadStrings(const TensorInput& in, int64_t count,
                                                           const RequestLimits& limits) {
  const InputTensor& t = *in.tensor;
  std::vector<absl::string_view> out;
  if (in.raw == nullptr) {
    if (t.contents().bytes_contents_size() != count) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name(), "': ", t.contents().bytes_contents_size(),
                       " typed elements, shape ", ShapeString(t), " needs ", count));
    }
    RETURN_IF_ERROR(CheckTokenCount(count, count, "text row", limits));
    out.assign(t.contents().bytes_contents().begin(), t.contents().bytes_contents().end());
    return out;
  }
  const std::string& raw = *in.raw;
  if (count > static_cast<int64_t>(raw.size() / 4)) {  // every element carries a 4-byte length
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': raw BYTES content of ",
                                                   raw.size(), " bytes cannot hold the ", count,
                                                   " elements of shape ", ShapeString(t)));
  }
  RETURN_IF_ERROR(CheckTokenCount(count, count, "text row", limits));  // each row needs a token
  out.reserve(static_cast<size_t>(count));
  size_t pos = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t len = 0;
    if (raw.size() - pos >= 4) std::memcpy(&len, raw.data() + pos, 4);
    if (raw.size() - pos < 4 || raw.size() - pos - 4 < len) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': raw BYTES element ",
                                                     i, " runs past the end of the content (",
                                                     raw.size(), " bytes)"));
    }
    out.emplace_back(raw.data() + pos + 4, len);
    pos += 4 + len;
  }
  if (pos != raw.size()) {
    return absl::InvalidArgumentError(absl::StrCat("input '", t.name(), "': raw BYTES content has ",
                                                   raw.size() - pos, " bytes after element ",
                                                   count - 1));
  }
  return out;
}

absl::Status DecodeText(const TensorInput& in, const ServedModel& model,
                        const RequestLimits& limits, InferenceRequest* request) {
  const InputTensor& t = *in.tensor;
  if (model.tokenizer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model.name, "' has no tokenizer; send 'input_ids' instead of 'text'"));
  }
  if (!(t.shape_size() == 1 || (t.shape_size() == 2 && t.shape(1) == 1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'text' must have shape [B] or [B,1], got ", ShapeString(t)));
  }
  if (t.datatype() != "BYTES") {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'text' has datatype ", t.datatype(), "; expected BYTES"));
  }
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(t));
  ASSIGN_OR_RETURN(const std::vector<absl::string_view> texts, ReadStrings(in, count, limits));
  request->text_input = true;
  request->noun = "text row";
  request->documents.Reserve(count, 0);
  int64_t longest = 1;
  for (int64_t r = 0; r < count; ++r) {
    absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(texts[r]);
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat("text row ", r, ": ", ids.status().message()));
    request->documents.Append(*ids);
    RETURN_IF_ERROR(CheckTokenCount(request->documents.total_tokens(), r + 1, "text row", limits));
    longest = std::max<int64_t>(longest, static_cast<int64_t>(ids->size()));
  }
  request->padded_length = longest;
  return absl::OkStatus();
}

absl::Status DecodeOutputs(const ModelInferRequest& wire, InferenceRequest* request) {
  if (wire.outputs_size() == 0) {
    for (const OutputSpec& spec : AllOutputs()) {
      if (!spec.text_only || request->text_input) request->outputs.push_back(spec.kind);
    }
    return absl::OkStatus();
  }
  for (const auto& out : wire.outputs()) {
    const OutputSpec* spec = FindOutput(out.name());
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown output '", out.name(),
                       "'; outputs are logits, hidden_states, token_logprobs, "
                       "embedding (and token_ids, lengths for text input)"));
    }
    request->outputs.push_back(spec->kind);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> IntParameter(const ModelInferRequest& wire,
                                                    const std::string& name) {
  auto it = wire.parameters().find(name);
  if (it == wire.parameters().end()) return std::optional<int64_t>();
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

absl::Status DecodeParameters(const ModelInferRequest& wire, DecodedInfer* out) {
  ASSIGN_OR_RETURN(const std::optional<int64_t> priority, IntParameter(wire, "priority"));
  if (priority) out->request->priority = static_cast<int>(std::min<int64_t>(*priority, 1 << 30));
  ASSIGN_OR_RETURN(const std::optional<int64_t> timeout_us, IntParameter(wire, "timeout"));
  if (timeout_us && *timeout_us > 0) out->timeout = absl::Microseconds(*timeout_us);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedInfer> DecodeModelInfer(const ModelInferRequest& wire,
                                              const ServedModel& model,
                                              const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckModel(model, wire.model_name(), wire.model_version()));
  DecodedInfer out;
  out.request = std::make_unique<InferenceRequest>();
  InferenceRequest& request = *out.request;
  request.id = wire.id();
  request.dims = model.dims();
  RETURN_IF_ERROR(DecodeParameters(wire, &out));
  ASSIGN_OR_RETURN(const Inputs in, BindInputs(wire));
  if (in.text && (in.ids || in.mask)) {
    return absl::InvalidArgumentError(
        "give either 'text' or 'input_ids' (with optional 'attention_mask'), not both");
  }
  if (in.text) {
    RETURN_IF_ERROR(DecodeText(in.text, model, limits, &request));
  } else if (in.ids) {
    RETURN_IF_ERROR(DecodeIds(in, limits, &request));
  } else {
    return absl::InvalidArgumentError(
        "missing input: give 'input_ids' (INT32/INT64 [B,T], optional 'attention_mask') or 'text' "
        "(BYTES [B])");
  }
  RETURN_IF_ERROR(DecodeOutputs(wire, &request));
  return out;
}

}  // namespace reformer::serving
