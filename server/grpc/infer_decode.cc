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
#include "server/request/tensor_inputs.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using WireInput = ModelInferRequest::InferInputTensor;

bool HasTypedContents(const WireInput& t) {
  return t.has_contents() && t.contents().ByteSizeLong() > 0;
}

// One input's contents as gRPC carries them: a raw_input_contents entry or typed contents.
class GrpcContents final : public InputContents {
 public:
  GrpcContents(const WireInput& tensor, const std::string* raw) : t_(tensor), raw_(raw) {}

  absl::StatusOr<IntElements> Ints(DataType type, int64_t count) const override {
    if (raw_ != nullptr) {
      std::optional<int64_t> expected = CheckedMul(count, DataTypeSize(type));
      if (!expected || *expected != static_cast<int64_t>(raw_->size())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", t_.name(), "': raw content has ", raw_->size(), " bytes, shape ",
            ShapeString(t_.shape()), " of ", t_.datatype(), " needs ",
            expected ? absl::StrCat(*expected) : std::string("more than 2^63")));
      }
      return IntElements(type, raw_->data());
    }
    const inference::InferTensorContents& c = t_.contents();
    RETURN_IF_ERROR(OnlyField(type == DataType::kInt32   ? "int_contents"
                              : type == DataType::kInt64 ? "int64_contents"
                                                         : "bool_contents"));
    const int64_t got = type == DataType::kInt32   ? c.int_contents_size()
                        : type == DataType::kInt64 ? c.int64_contents_size()
                                                   : c.bool_contents_size();
    if (got != count) return TypedCountError(got, count);
    // Repeated scalar fields are contiguous arrays of their native type (bool: one byte, 0/1).
    const void* data = type == DataType::kInt32 ? static_cast<const void*>(c.int_contents().data())
                       : type == DataType::kInt64
                           ? static_cast<const void*>(c.int64_contents().data())
                           : static_cast<const void*>(c.bool_contents().data());
    return IntElements(type, data);
  }

  absl::StatusOr<std::vector<absl::string_view>> Strings(
      int64_t count, const RequestLimits& limits) const override {
    if (raw_ != nullptr) {
      return ReadLengthPrefixed(t_.name(), t_.shape(), *raw_, count, "raw BYTES content", limits);
    }
    RETURN_IF_ERROR(OnlyField("bytes_contents"));
    const auto& strings = t_.contents().bytes_contents();
    if (strings.size() != count) return TypedCountError(strings.size(), count);
    RETURN_IF_ERROR(CheckTokenCount(count, count, "text row", limits));
    return std::vector<absl::string_view>(strings.begin(), strings.end());
  }

 private:
  // Typed values in a field other than `field` (the one of the input's datatype) would be dropped
  // without a word; they are an error naming the field.
  absl::Status OnlyField(absl::string_view field) const {
    const inference::InferTensorContents& c = t_.contents();
    const std::pair<absl::string_view, int> fields[] = {
        {"bool_contents", c.bool_contents_size()},     {"int_contents", c.int_contents_size()},
        {"int64_contents", c.int64_contents_size()},   {"uint_contents", c.uint_contents_size()},
        {"uint64_contents", c.uint64_contents_size()}, {"fp32_contents", c.fp32_contents_size()},
        {"fp64_contents", c.fp64_contents_size()},     {"bytes_contents", c.bytes_contents_size()}};
    for (const auto& [name, size] : fields) {
      if (name != field && size > 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", t_.name(), "' has datatype ", t_.datatype(), " but ", size,
            " values in contents.", name, "; its typed values go in contents.", field, " only"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status TypedCountError(int64_t got, int64_t count) const {
    return absl::InvalidArgumentError(absl::StrCat("input '", t_.name(), "': ", got,
                                                   " typed elements, shape ",
                                                   ShapeString(t_.shape()), " needs ", count));
  }

  const WireInput& t_;
  const std::string* raw_;
};

// The request's inputs as the shared decoder reads them (tensor_inputs.h). Contents are all raw or
// all typed.
absl::Status BindInputs(const ModelInferRequest& request, std::vector<GrpcContents>* contents,
                        std::vector<InputTensor>* inputs) {
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
                     request.inputs_size(), " inputs; give one per input, in order"));
  }
  contents->reserve(static_cast<size_t>(request.inputs_size()));
  for (int i = 0; i < request.inputs_size(); ++i) {
    const WireInput& t = request.inputs(i);
    if (raw && HasTypedContents(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t.name(),
                       "' has typed contents while raw_input_contents is used; "
                       "a request must use one or the other"));
    }
    contents->emplace_back(t, raw ? &request.raw_input_contents(i) : nullptr);
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    const WireInput& t = request.inputs(i);
    inputs->push_back({t.name(), t.datatype(), t.shape(), &(*contents)[i]});
  }
  return absl::OkStatus();
}

absl::Status DecodeOutputs(const ModelInferRequest& wire, InferenceRequest* request) {
  std::vector<absl::string_view> names;
  names.reserve(static_cast<size_t>(wire.outputs_size()));
  for (const auto& out : wire.outputs()) {
    if (out.parameters().contains("classification")) {  // asked for, not served: refused, never ignored
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", out.name(), "': parameter 'classification' (Triton's classification extension) is not "
          "supported"));
    }
    names.push_back(out.name());
  }
  return DecodeOutputNames(names, request);
}

absl::StatusOr<std::optional<int64_t>> IntParameter(const ModelInferRequest& wire,
                                                    const std::string& name) {
  auto it = wire.parameters().find(name);
  if (it == wire.parameters().end()) return std::optional<int64_t>();
  const InferParameter& p = it->second;
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      return std::optional<int64_t>(p.int64_param());
    case InferParameter::kUint64Param:
      return std::optional<int64_t>(static_cast<int64_t>(
          std::min<uint64_t>(p.uint64_param(), std::numeric_limits<int64_t>::max())));
    default:
      return ParameterTypeError(name, "an int64 or uint64 parameter");
  }
}

absl::Status DecodeParameters(const ModelInferRequest& wire, DecodedInfer* out) {
  ASSIGN_OR_RETURN(const std::optional<int64_t> priority, IntParameter(wire, "priority"));
  if (priority) RETURN_IF_ERROR(ApplyPriority(*priority, out->request.get()));
  ASSIGN_OR_RETURN(const std::optional<int64_t> timeout_us, IntParameter(wire, "timeout"));
  if (timeout_us) {
    ASSIGN_OR_RETURN(out->timeout, TimeoutParameter(*timeout_us));
  }
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
  std::vector<GrpcContents> contents;
  std::vector<InputTensor> inputs;
  RETURN_IF_ERROR(BindInputs(wire, &contents, &inputs));
  RETURN_IF_ERROR(DecodeInputs(inputs, model, limits, &request));
  RETURN_IF_ERROR(DecodeOutputs(wire, &request));
  return out;
}

}  // namespace reformer::serving
