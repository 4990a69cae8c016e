#include "server/request/tensor_inputs.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"
#include "server/request/checked_math.h"

namespace reformer::serving {
namespace {

struct BoundInputs {
  const InputTensor* ids = nullptr;
  const InputTensor* mask = nullptr;
  const InputTensor* text = nullptr;
};

absl::StatusOr<BoundInputs> BindInputs(absl::Span<const InputTensor> inputs) {
  BoundInputs in;
  for (const InputTensor& t : inputs) {
    const InputTensor** slot = t.name == "input_ids"        ? &in.ids
                               : t.name == "attention_mask" ? &in.mask
                               : t.name == "text"           ? &in.text
                                                            : nullptr;
    if (slot == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown input '", t.name, "'; inputs are input_ids, attention_mask, text"));
    }
    if (*slot != nullptr)
      return absl::InvalidArgumentError(absl::StrCat("input '", t.name, "' given twice"));
    *slot = &t;
  }
  return in;
}

// The storage type of an integer input with datatype `t.datatype`.
absl::StatusOr<DataType> IntType(const InputTensor& t, bool allow_bool) {
  if (t.datatype == "INT32") return DataType::kInt32;
  if (t.datatype == "INT64") return DataType::kInt64;
  if (allow_bool && t.datatype == "BOOL") return DataType::kBool;
  return absl::InvalidArgumentError(absl::StrCat("input '", t.name, "' has datatype ", t.datatype,
                                                 "; expected INT32",
                                                 allow_bool ? ", INT64 or BOOL" : " or INT64"));
}

absl::StatusOr<IntElements> ReadInts(const InputTensor& t, int64_t count, bool allow_bool) {
  ASSIGN_OR_RETURN(const DataType type, IntType(t, allow_bool));
  return t.contents->Ints(type, count);
}

// Row r's real tokens under `mask`: {first position, count}; {0, 0} for an all-zero row.
absl::StatusOr<std::pair<int64_t, int64_t>> MaskSpan(const IntElements& mask, int64_t r,
                                                     int64_t t) {
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
absl::Status AppendRow(const IntElements& ids, int64_t r, int64_t t, int64_t first, int64_t n,
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

// The mask (when given) as the ids' [B,T] shape requires, read once its shape matches.
absl::StatusOr<std::optional<IntElements>> ReadMask(const BoundInputs& in, int64_t count) {
  if (in.mask == nullptr) return std::optional<IntElements>();
  const InputTensor& m = *in.mask;
  const InputTensor& ids = *in.ids;
  if (m.shape.size() != 2 || m.shape[0] != ids.shape[0] || m.shape[1] != ids.shape[1]) {
    return absl::InvalidArgumentError(absl::StrCat("input 'attention_mask' has shape ",
                                                   ShapeString(m.shape), ", input_ids ",
                                                   ShapeString(ids.shape), "; they must match"));
  }
  ASSIGN_OR_RETURN(IntElements mask, ReadInts(m, count, /*allow_bool=*/true));
  return std::optional<IntElements>(mask);
}

absl::Status DecodeIds(const BoundInputs& in, const RequestLimits& limits,
                       InferenceRequest* request) {
  const InputTensor& ids_t = *in.ids;
  if (ids_t.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'input_ids' must have shape [B,T], got ", ShapeString(ids_t.shape)));
  }
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(ids_t.name, ids_t.shape));
  const int64_t b = ids_t.shape[0], t = ids_t.shape[1];
  if (t == 0) {
    return absl::InvalidArgumentError(absl::StrCat("input 'input_ids' has shape ",
                                                   ShapeString(ids_t.shape),
                                                   ": rows need at least one token"));
  }
  ASSIGN_OR_RETURN(const IntElements ids, ReadInts(ids_t, count, /*allow_bool=*/false));
  RETURN_IF_ERROR(CheckTokenCount(b, b, "row", limits));
  ASSIGN_OR_RETURN(const std::optional<IntElements> mask, ReadMask(in, count));
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

absl::Status DecodeText(const InputTensor& t, const ServedModel& model, const RequestLimits& limits,
                        InferenceRequest* request) {
  if (model.tokenizer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model.name, "' has no tokenizer; send 'input_ids' instead of 'text'"));
  }
  if (!(t.shape.size() == 1 || (t.shape.size() == 2 && t.shape[1] == 1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'text' must have shape [B] or [B,1], got ", ShapeString(t.shape)));
  }
  if (t.datatype != "BYTES") {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'text' has datatype ", t.datatype, "; expected BYTES"));
  }
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(t.name, t.shape));
  ASSIGN_OR_RETURN(const std::vector<absl::string_view> texts, t.contents->Strings(count, limits));
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

template <typename T>
int64_t Load(const char* p, int64_t i) {
  T v;
  std::memcpy(&v, p + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}

}  // namespace

int64_t IntElements::operator[](int64_t i) const {
  switch (storage_) {
    case DataType::kInt64:
      return Load<int64_t>(data_, i);
    case DataType::kInt32:
      return Load<int32_t>(data_, i);
    default:
      return static_cast<unsigned char>(data_[i]);
  }
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<int64_t> ElementCount(absl::string_view name, absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    std::optional<int64_t> next = CheckedMul(n, d);
    if (d < 0 || !next) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "' has shape ", ShapeString(shape),
                       d < 0 ? ": a negative dimension" : ": too many elements"));
    }
    n = *next;
  }
  return n;
}

absl::Status DecodeInputs(absl::Span<const InputTensor> inputs, const ServedModel& model,
                          const RequestLimits& limits, InferenceRequest* request) {
  ASSIGN_OR_RETURN(const BoundInputs in, BindInputs(inputs));
  if (in.text != nullptr && (in.ids != nullptr || in.mask != nullptr)) {
    return absl::InvalidArgumentError(
        "give either 'text' or 'input_ids' (with optional 'attention_mask'), not both");
  }
  if (in.text != nullptr) return DecodeText(*in.text, model, limits, request);
  if (in.ids != nullptr) return DecodeIds(in, limits, request);
  return absl::InvalidArgumentError(
      "missing input: give 'input_ids' (INT32/INT64 [B,T], optional 'attention_mask') or 'text' "
      "(BYTES [B])");
}

absl::Status DecodeOutputNames(absl::Span<const absl::string_view> names,
                               InferenceRequest* request) {
  if (names.empty()) {
    for (const OutputSpec& spec : AllOutputs()) {
      if (!spec.text_only || request->text_input) request->outputs.push_back(spec.kind);
    }
    return absl::OkStatus();
  }
  for (absl::string_view name : names) {
    const OutputSpec* spec = FindOutput(name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown output '", name,
                       "'; outputs are logits, hidden_states, token_logprobs, "
                       "embedding (and token_ids, lengths for text input)"));
    }
    request->outputs.push_back(spec->kind);
  }
  return absl::OkStatus();
}

absl::Status ApplyPriority(int64_t priority, InferenceRequest* request) {
  if (priority < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter 'priority' must be >= 0, got ", priority));
  }
  request->priority = static_cast<int>(std::min<int64_t>(priority, 1 << 30));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<absl::Duration>> TimeoutParameter(int64_t microseconds) {
  if (microseconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter 'timeout' must be >= 0, got ", microseconds));
  }
  if (microseconds == 0) return std::optional<absl::Duration>();
  return std::optional<absl::Duration>(absl::Microseconds(microseconds));
}

absl::Status ParameterTypeError(absl::string_view name, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("parameter '", name, "' must be ", expected));
}

absl::StatusOr<std::vector<absl::string_view>> ReadLengthPrefixed(absl::string_view name,
                                                                  absl::Span<const int64_t> shape,
                                                                  absl::string_view bytes,
                                                                  int64_t count, const char* what,
                                                                  const RequestLimits& limits) {
  if (count > static_cast<int64_t>(bytes.size() / 4)) {  // every element carries a 4-byte length
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", what, " of ",
                                                   bytes.size(), " bytes cannot hold the ", count,
                                                   " elements of shape ", ShapeString(shape)));
  }
  RETURN_IF_ERROR(CheckTokenCount(count, count, "text row", limits));  // each row needs a token
  std::vector<absl::string_view> out;
  out.reserve(static_cast<size_t>(count));
  size_t pos = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t len = 0;
    if (bytes.size() - pos >= 4) std::memcpy(&len, bytes.data() + pos, 4);
    if (bytes.size() - pos < 4 || bytes.size() - pos - 4 < len) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", what, ": element ", i,
                                                     " runs past the end (", bytes.size(),
                                                     " bytes)"));
    }
    out.emplace_back(bytes.data() + pos + 4, len);
    pos += 4 + len;
  }
  if (pos != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", what, " has ",
                                                   bytes.size() - pos, " bytes after element ",
                                                   count - 1));
  }
  return out;
}

}  // namespace reformer::serving
