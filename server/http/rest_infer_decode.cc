#include "server/http/rest_infer_decode.h"

#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "server/http/infer_json.h"
#include "server/request/checked_math.h"
#include "server/request/tensor_inputs.h"

namespace reformer::serving {
namespace {

// An input's `data`, as JSON values.
class JsonDataContents final : public InputContents {
 public:
  explicit JsonDataContents(const JsonInput& in) : in_(in) {}

  absl::StatusOr<IntElements> Ints(DataType type, int64_t count) const override {
    const JsonTensorData& d = in_.data;
    RETURN_IF_ERROR(CheckCount(count));
    const char* name = DataTypeName(type);
    if (d.first_string >= 0) return KindError(name, d.first_string, "a string");
    if (d.first_other >= 0)
      return KindError(name, d.first_other, d.other_text + ", not an integer");
    if (type != DataType::kBool && d.first_bool >= 0) {
      return KindError(name, d.first_bool, "a boolean");
    }
    RETURN_IF_ERROR(CheckNesting(d, in_.name, in_.shape));
    const int64_t outside =
        type == DataType::kInt32 ? d.first_outside_int32 : d.first_outside_int64;
    if (outside >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", in_.name, "': 'data' element ", outside, " is outside ", name));
    }
    return IntElements(DataType::kInt64, d.ints.data());
  }

  absl::StatusOr<std::vector<absl::string_view>> Strings(
      int64_t count, const RequestLimits& limits) const override {
    const JsonTensorData& d = in_.data;
    RETURN_IF_ERROR(CheckCount(count));
    if (d.first_number >= 0) return KindError("BYTES", d.first_number, "a number");
    if (d.first_bool >= 0) return KindError("BYTES", d.first_bool, "a boolean");
    if (d.first_other >= 0) return KindError("BYTES", d.first_other, d.other_text);
    RETURN_IF_ERROR(CheckNesting(d, in_.name, in_.shape));
    RETURN_IF_ERROR(CheckTokenCount(count, count, "text row", limits));
    std::vector<absl::string_view> out;
    out.reserve(d.string_ends.size());
    size_t begin = 0;
    for (size_t end : d.string_ends) {
      out.emplace_back(d.strings.data() + begin, end - begin);
      begin = end;
    }
    return out;
  }

 private:
  absl::Status CheckCount(int64_t count) const {
    if (in_.data.count == count) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("input '", in_.name, "': 'data' has ",
                                                   in_.data.count, " elements, shape ",
                                                   ShapeString(in_.shape), " needs ", count));
  }
  absl::Status KindError(absl::string_view datatype, int64_t index, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("input '", in_.name, "' has datatype ", datatype,
                                                   " but 'data' element ", index, " is ", what));
  }

  const JsonInput& in_;
};

// An input's slice of the binary data after the JSON.
class BinaryContents final : public InputContents {
 public:
  BinaryContents(const JsonInput& in, absl::string_view bytes) : in_(in), bytes_(bytes) {}

  absl::StatusOr<IntElements> Ints(DataType type, int64_t count) const override {
    std::optional<int64_t> expected = CheckedMul(count, DataTypeSize(type));
    if (!expected || *expected != static_cast<int64_t>(bytes_.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", in_.name, "': binary_data_size is ", bytes_.size(),
                       " bytes, shape ", ShapeString(in_.shape), " of ", in_.datatype, " needs ",
                       expected ? absl::StrCat(*expected) : std::string("more than 2^63")));
    }
    return IntElements(type, bytes_.data());
  }

  absl::StatusOr<std::vector<absl::string_view>> Strings(
      int64_t count, const RequestLimits& limits) const override {
    return ReadLengthPrefixed(in_.name, in_.shape, bytes_, count, "binary BYTES data", limits);
  }

 private:
  const JsonInput& in_;
  const absl::string_view bytes_;
};

// The JSON part's length (Inference-Header-Content-Length), at most the body's.
absl::StatusOr<size_t> JsonLength(const RestInferInput& input) {
  if (!input.header_length) return input.body.size();
  const absl::string_view text = absl::StripAsciiWhitespace(*input.header_length);
  uint64_t n = 0;
  const bool digits = !text.empty() && text.find_first_not_of("0123456789") == text.npos;
  if (!digits || !absl::SimpleAtoi(text, &n)) {
    return absl::InvalidArgumentError(absl::StrCat("Inference-Header-Content-Length '",
                                                   text.substr(0, 40), "' is not a byte count"));
  }
  if (n > input.body.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Inference-Header-Content-Length ", n,
                                                   " is beyond the body (", input.body.size(),
                                                   " bytes)"));
  }
  return static_cast<size_t>(n);
}

// Every input names itself, its datatype and shape, and carries exactly one of `data` and
// `binary_data_size`.
absl::Status CheckDeclared(const JsonInferRequest& json, bool binary_allowed) {
  for (size_t i = 0; i < json.inputs.size(); ++i) {
    const JsonInput& in = json.inputs[i];
    const std::string label =
        in.has_name ? absl::StrCat("input '", in.name, "'") : absl::StrCat("inputs[", i, "]");
    const char* missing = !in.has_name       ? "name"
                          : !in.has_datatype ? "datatype"
                          : !in.has_shape    ? "shape"
                                             : nullptr;
    if (missing != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(label, " has no '", missing, "'"));
    }
    if (in.has_data && in.binary_data_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, " has both 'data' and parameters.binary_data_size"));
    }
    if (!in.has_data && !in.binary_data_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, " has neither 'data' nor parameters.binary_data_size"));
    }
    if (in.binary_data_size && !binary_allowed) {
      return absl::InvalidArgumentError(
          absl::StrCat(label,
                       " has parameters.binary_data_size but the request has no "
                       "Inference-Header-Content-Length header (the JSON's length)"));
    }
  }
  for (size_t i = 0; i < json.outputs.size(); ++i) {
    if (!json.outputs[i].has_name) {
      return absl::InvalidArgumentError(absl::StrCat("outputs[", i, "] has no 'name'"));
    }
  }
  return absl::OkStatus();
}

// Each binary input's slice of `tail`; the sizes must add up to it exactly.
absl::StatusOr<std::vector<absl::string_view>> BinarySlices(const JsonInferRequest& json,
                                                            absl::string_view tail) {
  std::vector<absl::string_view> slices(json.inputs.size());
  int64_t total = 0;
  for (const JsonInput& in : json.inputs) {
    if (in.binary_data_size) total = SaturatingAdd(total, *in.binary_data_size);
  }
  if (total != static_cast<int64_t>(tail.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("the inputs' binary_data_size add up to ", total, " bytes, but the body has ",
                     tail.size(), " bytes after the JSON (Inference-Header-Content-Length)"));
  }
  size_t at = 0;
  for (size_t i = 0; i < json.inputs.size(); ++i) {
    if (!json.inputs[i].binary_data_size) continue;
    const size_t n = static_cast<size_t>(*json.inputs[i].binary_data_size);
    slices[i] = tail.substr(at, n);
    at += n;
  }
  return slices;
}

absl::Status DecodeParameters(const JsonInferRequest& json, DecodedRestInfer* out) {
  if (json.priority) RETURN_IF_ERROR(ApplyPriority(*json.priority, out->request.get()));
  if (json.timeout) {
    ASSIGN_OR_RETURN(out->timeout, TimeoutParameter(*json.timeout));
  }
  return absl::OkStatus();
}

absl::Status DecodeOutputs(const JsonInferRequest& json, DecodedRestInfer* out) {
  std::vector<absl::string_view> names;
  for (const JsonOutput& o : json.outputs) names.push_back(o.name);
  RETURN_IF_ERROR(DecodeOutputNames(names, out->request.get()));
  const bool all = json.binary_data_output.value_or(false);
  for (size_t i = 0; i < out->request->outputs.size(); ++i) {
    out->binary.push_back(json.outputs.empty() ? all : json.outputs[i].binary_data.value_or(all));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedRestInfer> DecodeRestInfer(const RestInferInput& input,
                                                 const ServedModel& model,
                                                 const RequestLimits& limits) {
  RETURN_IF_ERROR(
      CheckModel(model, std::string(input.model_name), std::string(input.model_version)));
  ASSIGN_OR_RETURN(const size_t json_length, JsonLength(input));
  ASSIGN_OR_RETURN(const JsonInferRequest json, ReadInferJson(input.body.substr(0, json_length)));
  RETURN_IF_ERROR(CheckDeclared(json, input.header_length.has_value()));
  ASSIGN_OR_RETURN(const std::vector<absl::string_view> slices,
                   BinarySlices(json, input.body.substr(json_length)));
  DecodedRestInfer out;
  out.request = std::make_unique<InferenceRequest>();
  out.request->id = json.id;
  out.request->dims = model.dims();
  RETURN_IF_ERROR(DecodeParameters(json, &out));
  std::vector<JsonDataContents> json_contents;
  std::vector<BinaryContents> binary_contents;
  json_contents.reserve(json.inputs.size());
  binary_contents.reserve(json.inputs.size());
  std::vector<InputTensor> inputs;
  for (size_t i = 0; i < json.inputs.size(); ++i) {
    const JsonInput& in = json.inputs[i];
    const InputContents* contents;
    if (in.binary_data_size) {
      contents = &binary_contents.emplace_back(in, slices[i]);
    } else {
      contents = &json_contents.emplace_back(in);
    }
    inputs.push_back({in.name, in.datatype, in.shape, contents});
  }
  RETURN_IF_ERROR(DecodeInputs(inputs, model, limits, out.request.get()));
  RETURN_IF_ERROR(DecodeOutputs(json, &out));
  return out;
}

}  // namespace reformer::serving
