#include "server/http/infer_json.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/request/exception_status.h"
#include "server/request/tensor_inputs.h"

namespace reformer::serving {
namespace {

using nlohmann::json;

// One scalar JSON value as the SAX parser reports it.
struct Scalar {
  enum Kind { kNull, kBool, kInt, kUint, kFloat, kString } kind = kNull;
  int64_t i = 0;
  uint64_t u = 0;
  bool b = false;
  std::string* s = nullptr;           // kString (may be moved from)
  const std::string* text = nullptr;  // kFloat: as written
};

const char* KindName(const Scalar& v) {
  switch (v.kind) {
    case Scalar::kNull:
      return "null";
    case Scalar::kBool:
      return "a boolean";
    case Scalar::kInt:
    case Scalar::kUint:
      return "an integer";
    case Scalar::kFloat:
      return "a number";
    case Scalar::kString:
      return "a string";
  }
  return "a value";
}

// Where a value is, while parsing: the innermost open object or array.
enum class Ctx : uint8_t {
  kRoot,          // the request object
  kParams,        // request parameters
  kInputs,        // the inputs list
  kInput,         // one input object
  kShape,         // an input's shape
  kInputParams,   // an input's parameters
  kData,          // an input's data (any depth)
  kOutputs,       // the outputs list
  kOutput,        // one requested output
  kOutputParams,  // its parameters
  kSkip,          // inside a value nobody reads
};

// The nlohmann SAX interface (json_sax.hpp); every method returns false to stop at an error.
// The members the Open Inference Protocol defines for each object of an inference request
// (docs/request-path.md; parameters stay open: extensions define their own).
constexpr absl::string_view kRootKeys = "id, parameters, inputs, outputs";
constexpr absl::string_view kInputKeys = "name, shape, datatype, parameters, data";
constexpr absl::string_view kOutputKeys = "name, parameters";

class InferJsonReader {
 public:
  explicit InferJsonReader(const JsonReadLimits& limits) : limits_(limits) {}

  bool null() { return Value(Scalar{}); }
  bool boolean(bool v) { return Value(Scalar{Scalar::kBool, 0, 0, v}); }
  bool number_integer(json::number_integer_t v) { return Value(Scalar{Scalar::kInt, v}); }
  bool number_unsigned(json::number_unsigned_t v) { return Value(Scalar{Scalar::kUint, 0, v}); }
  bool number_float(json::number_float_t, const std::string& s) {
    Scalar v{Scalar::kFloat};
    v.text = &s;
    return Value(v);
  }
  bool string(std::string& s) {
    Scalar v{Scalar::kString};
    v.s = &s;
    return Value(v);
  }
  bool binary(json::binary_t&) { return Fail("binary values are not JSON"); }
  bool start_object(std::size_t) { return Open(/*object=*/true); }
  bool start_array(std::size_t) { return Open(/*object=*/false); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool key(std::string& k) {
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const json::exception& e) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("the body is not valid JSON (at byte ", position, "): ", e.what()));
    return false;
  }

  absl::Status status() const { return status_; }
  JsonInferRequest& result() { return result_; }

 private:
  bool Fail(absl::string_view message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(message);
    return false;
  }
  std::string InputLabel() const {
    const JsonInput& in = result_.inputs.back();
    return in.has_name ? absl::StrCat("input '", in.name, "'")
                       : absl::StrCat("inputs[", result_.inputs.size() - 1, "]");
  }
  std::string OutputLabel() const {
    const JsonOutput& out = result_.outputs.back();
    return out.has_name ? absl::StrCat("output '", out.name, "'")
                        : absl::StrCat("outputs[", result_.outputs.size() - 1, "]");
  }
  // A key the Open Inference Protocol does not define for `what` (a misspelt "output" would otherwise be
  // dropped and every output sent): an error naming it and the keys that object may hold.
  bool UnknownKey(absl::string_view what, absl::string_view known) {
    return Fail(absl::StrCat(what, ": unknown key '", key_, "' (it may hold ", known, ")"));
  }
  // Triton's classification extension: asked for but not served, so refused rather than ignored.
  bool Unsupported() {
    return key_ != "classification" ||
           Fail(absl::StrCat(OutputLabel(), ": parameter 'classification' (Triton's classification "
                                            "extension) is not supported"));
  }
  // Marks `*seen`; false (a message naming `what`) when the key came before.
  bool Once(bool* seen, absl::string_view what, absl::string_view key) {
    if (*seen) return Fail(absl::StrCat(what, " gives '", key, "' twice"));
    *seen = true;
    return true;
  }

  bool Open(bool object);
  bool OpenIn(Ctx parent, bool object, Ctx* child);
  bool OpenInput(bool object, Ctx* child);
  bool Close();
  bool Value(const Scalar& v);
  bool RootValue(const Scalar& v);
  bool ParamValue(const Scalar& v);
  bool InputValue(const Scalar& v);
  bool ShapeValue(const Scalar& v);
  bool InputParamValue(const Scalar& v);
  bool Leaf(const Scalar& v);
  bool OutputValue(const Scalar& v);

  const JsonReadLimits limits_;
  absl::Status status_;
  JsonInferRequest result_;
  std::vector<Ctx> stack_;
  std::string key_;              // the last key of the innermost open object
  std::vector<int64_t> counts_;  // elements so far of each open `data` array, by depth
};

bool InferJsonReader::Open(bool object) {
  if (static_cast<int>(stack_.size()) >= limits_.max_depth) {
    return Fail(absl::StrCat("the JSON is nested deeper than ", limits_.max_depth, " levels"));
  }
  Ctx child;
  if (stack_.empty()) {
    if (!object) return Fail("the body must be a JSON object (an inference request)");
    child = Ctx::kRoot;
  } else if (!OpenIn(stack_.back(), object, &child)) {
    return false;
  }
  if (child == Ctx::kData) counts_.push_back(0);
  stack_.push_back(child);
  return true;
}

bool InferJsonReader::OpenIn(Ctx parent, bool object, Ctx* child) {
  *child = Ctx::kSkip;
  switch (parent) {
    case Ctx::kRoot:
      if (key_ == "parameters") {
        *child = Ctx::kParams;
        return (object || Fail("'parameters' must be an object")) &&
               Once(&result_.has_parameters, "the request", key_);
      }
      if (key_ == "inputs" || key_ == "outputs") {
        const bool inputs = key_ == "inputs";
        *child = inputs ? Ctx::kInputs : Ctx::kOutputs;
        return (!object || Fail(absl::StrCat("'", key_, "' must be a list of objects"))) &&
               Once(inputs ? &result_.has_inputs : &result_.has_outputs, "the request", key_);
      }
      if (key_ == "id") return Fail("'id' must be a string");
      return UnknownKey("the request", kRootKeys);
    case Ctx::kParams:
    case Ctx::kInputParams:
    case Ctx::kOutputParams:
      if (key_ == "priority" || key_ == "timeout" || key_ == "binary_data_output" ||
          key_ == "binary_data_size" || key_ == "binary_data") {
        return Fail(absl::StrCat("parameter '", key_, "' must be a ",
                                 key_.rfind("binary_data", 0) == 0 && key_ != "binary_data_size"
                                     ? "boolean"
                                     : "non-negative integer"));
      }
      return parent != Ctx::kOutputParams || Unsupported();  // other parameters are not read
    case Ctx::kInputs:
    case Ctx::kOutputs: {
      const bool inputs = parent == Ctx::kInputs;
      if (!object)
        return Fail(
            absl::StrCat("each entry of '", inputs ? "inputs" : "outputs", "' must be an object"));
      const size_t n = inputs ? result_.inputs.size() : result_.outputs.size();
      const int max = inputs ? limits_.max_inputs : limits_.max_outputs;
      if (static_cast<int>(n) >= max) {
        return Fail(absl::StrCat("the request has more than ", max, inputs ? " inputs" : " outputs",
                                 "; this model has at most 3 inputs and 6 outputs"));
      }
      if (inputs) {
        result_.inputs.emplace_back();
      } else {
        result_.outputs.emplace_back();
      }
      *child = inputs ? Ctx::kInput : Ctx::kOutput;
      return true;
    }
    case Ctx::kInput:
      return OpenInput(object, child);
    case Ctx::kShape:
      return Fail(absl::StrCat(InputLabel(), ": 'shape' must be a list of integers"));
    case Ctx::kData:
      if (object) {
        return Fail(
            absl::StrCat(InputLabel(), ": 'data' holds numbers, booleans or strings, not objects"));
      }
      ++counts_.back();
      *child = Ctx::kData;
      return true;
    case Ctx::kOutput:
      if (key_ == "parameters") {
        *child = Ctx::kOutputParams;
        return (object || Fail(absl::StrCat(OutputLabel(), ": 'parameters' must be an object"))) &&
               Once(&result_.outputs.back().has_parameters, OutputLabel(), key_);
      }
      if (key_ == "name") return Fail(absl::StrCat(OutputLabel(), ": 'name' must be a string"));
      return UnknownKey(OutputLabel(), kOutputKeys);
    case Ctx::kSkip:
      return true;
  }
  return true;
}

bool InferJsonReader::OpenInput(bool object, Ctx* child) {
  JsonInput& in = result_.inputs.back();
  if (key_ == "shape" || key_ == "data") {
    const bool shape = key_ == "shape";
    *child = shape ? Ctx::kShape : Ctx::kData;
    if (object) {
      return Fail(
          absl::StrCat(InputLabel(), ": '", key_, "' must be a list", shape ? " of integers" : ""));
    }
    return Once(shape ? &in.has_shape : &in.has_data, InputLabel(), key_);
  }
  if (key_ == "parameters") {
    *child = Ctx::kInputParams;
    return (object || Fail(absl::StrCat(InputLabel(), ": 'parameters' must be an object"))) &&
           Once(&in.has_parameters, InputLabel(), key_);
  }
  if (key_ == "name" || key_ == "datatype") {
    return Fail(absl::StrCat(InputLabel(), ": '", key_, "' must be a string"));
  }
  return UnknownKey(InputLabel(), kInputKeys);
}

bool InferJsonReader::Close() {
  const Ctx ctx = stack_.back();
  stack_.pop_back();
  if (ctx != Ctx::kData) return true;
  JsonTensorData& data = result_.inputs.back().data;
  const size_t depth = counts_.size();
  const int64_t length = counts_.back();
  counts_.pop_back();
  if (data.lengths.size() < depth) {
    data.lengths.resize(depth, -1);
  }
  if (data.lengths[depth - 1] < 0) {
    data.lengths[depth - 1] = length;
  } else if (data.lengths[depth - 1] != length) {
    data.ragged = true;
  }
  return true;
}

bool InferJsonReader::Value(const Scalar& v) {
  if (stack_.empty()) return Fail("the body must be a JSON object (an inference request)");
  switch (stack_.back()) {
    case Ctx::kRoot:
      return RootValue(v);
    case Ctx::kParams:
      return ParamValue(v);
    case Ctx::kInputs:
      return Fail("each entry of 'inputs' must be an object");
    case Ctx::kInput:
      return InputValue(v);
    case Ctx::kShape:
      return ShapeValue(v);
    case Ctx::kInputParams:
      return InputParamValue(v);
    case Ctx::kData:
      return Leaf(v);
    case Ctx::kOutputs:
      return Fail("each entry of 'outputs' must be an object");
    case Ctx::kOutput:
      return OutputValue(v);
    case Ctx::kOutputParams:
      if (key_ != "binary_data") return Unsupported();
      if (v.kind != Scalar::kBool) {
        return Fail(absl::StrCat(OutputLabel(), ": parameter 'binary_data' must be a boolean"));
      }
      if (result_.outputs.back().binary_data) {
        return Fail(absl::StrCat(OutputLabel(), ": parameter 'binary_data' given twice"));
      }
      result_.outputs.back().binary_data = v.b;
      return true;
    case Ctx::kSkip:
      return true;
  }
  return true;
}

bool InferJsonReader::RootValue(const Scalar& v) {
  if (key_ == "id") {
    if (v.kind != Scalar::kString) return Fail("'id' must be a string");
    if (!Once(&result_.has_id, "the request", key_)) return false;
    result_.id = std::move(*v.s);
    return true;
  }
  if (key_ == "inputs" || key_ == "outputs") {
    return Fail(absl::StrCat("'", key_, "' must be a list of objects"));
  }
  if (key_ == "parameters") return Fail("'parameters' must be an object");
  return UnknownKey("the request", kRootKeys);
}

// A non-negative integer parameter (`priority`, `timeout`, `binary_data_size`); uint64 values
// beyond INT64 are clamped (they are beyond every limit anyway).
std::optional<int64_t> NonNegative(const Scalar& v) {
  if (v.kind == Scalar::kInt && v.i >= 0) return v.i;
  if (v.kind == Scalar::kUint) {
    return static_cast<int64_t>(
        std::min<uint64_t>(v.u, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
  }
  return std::nullopt;
}

bool InferJsonReader::ParamValue(const Scalar& v) {
  if (key_ == "priority" || key_ == "timeout") {
    std::optional<int64_t>& slot = key_ == "priority" ? result_.priority : result_.timeout;
    if (slot) return Fail(absl::StrCat("parameter '", key_, "' given twice"));
    slot = NonNegative(v);
    if (!slot) {
      return Fail(absl::StrCat("parameter '", key_, "' must be a non-negative integer",
                               key_ == "timeout" ? " (microseconds)" : "", ", got ", KindName(v),
                               v.kind == Scalar::kInt ? absl::StrCat(" ", v.i) : ""));
    }
    return true;
  }
  if (key_ == "binary_data_output") {
    if (v.kind != Scalar::kBool) return Fail("parameter 'binary_data_output' must be a boolean");
    if (result_.binary_data_output) return Fail("parameter 'binary_data_output' given twice");
    result_.binary_data_output = v.b;
  }
  return true;  // other parameters are not read
}

bool InferJsonReader::InputValue(const Scalar& v) {
  JsonInput& in = result_.inputs.back();
  if (key_ == "name" || key_ == "datatype") {
    const bool name = key_ == "name";
    if (v.kind != Scalar::kString) {
      return Fail(absl::StrCat(InputLabel(), ": '", key_, "' must be a string"));
    }
    if (!Once(name ? &in.has_name : &in.has_datatype, InputLabel(), key_)) return false;
    (name ? in.name : in.datatype) = std::move(*v.s);
    return true;
  }
  if (key_ == "shape")
    return Fail(absl::StrCat(InputLabel(), ": 'shape' must be a list of integers"));
  if (key_ == "data") return Fail(absl::StrCat(InputLabel(), ": 'data' must be a list"));
  if (key_ == "parameters")
    return Fail(absl::StrCat(InputLabel(), ": 'parameters' must be an object"));
  return UnknownKey(InputLabel(), kInputKeys);
}

bool InferJsonReader::ShapeValue(const Scalar& v) {
  JsonInput& in = result_.inputs.back();
  if (static_cast<int>(in.shape.size()) >= limits_.max_rank) {
    return Fail(
        absl::StrCat(InputLabel(), ": 'shape' has more than ", limits_.max_rank, " dimensions"));
  }
  if (v.kind == Scalar::kInt) {
    in.shape.push_back(v.i);                  // negative: ElementCount names it
  } else if (v.kind == Scalar::kUint) {       // nlohmann reports non-negative integers as unsigned
    in.shape.push_back(static_cast<int64_t>(  // beyond INT64: "too many elements"
        std::min<uint64_t>(v.u, std::numeric_limits<int64_t>::max())));
  } else {
    return Fail(
        absl::StrCat(InputLabel(), ": 'shape' must be a list of integers, found ", KindName(v)));
  }
  return true;
}

bool InferJsonReader::InputParamValue(const Scalar& v) {
  if (key_ != "binary_data_size") return true;
  JsonInput& in = result_.inputs.back();
  if (in.binary_data_size)
    return Fail(absl::StrCat(InputLabel(), ": 'binary_data_size' given twice"));
  in.binary_data_size = NonNegative(v);
  if (!in.binary_data_size) {
    return Fail(absl::StrCat(InputLabel(),
                             ": parameter 'binary_data_size' must be a non-negative integer"));
  }
  return true;
}

bool InferJsonReader::Leaf(const Scalar& v) {
  JsonTensorData& d = result_.inputs.back().data;
  const int depth = static_cast<int>(counts_.size());
  ++counts_.back();
  if (d.leaf_depth == 0) d.leaf_depth = depth;
  if (d.leaf_depth != depth) d.leaf_depth = -1;
  const int64_t index = d.count++;
  auto first = [index](int64_t* at) {
    if (*at < 0) *at = index;
  };
  switch (v.kind) {
    case Scalar::kInt:
    case Scalar::kUint: {
      int64_t x = v.i;
      if (v.kind == Scalar::kUint) {
        x = static_cast<int64_t>(std::min<uint64_t>(v.u, std::numeric_limits<int64_t>::max()));
        if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          first(&d.first_outside_int64);
        }
      }
      if (x != static_cast<int32_t>(x)) first(&d.first_outside_int32);
      first(&d.first_number);
      d.ints.push_back(x);
      return true;
    }
    case Scalar::kBool:
      first(&d.first_bool);
      d.ints.push_back(v.b ? 1 : 0);
      return true;
    case Scalar::kString:
      first(&d.first_string);
      d.strings.append(*v.s);
      d.string_ends.push_back(d.strings.size());
      return true;
    default:
      if (d.first_other < 0) {
        d.first_other = index;
        d.other_text = v.kind == Scalar::kNull ? "null" : v.text->substr(0, 40);
      }
      return true;
  }
}

bool InferJsonReader::OutputValue(const Scalar& v) {
  JsonOutput& out = result_.outputs.back();
  if (key_ == "name") {
    if (v.kind != Scalar::kString)
      return Fail(absl::StrCat(OutputLabel(), ": 'name' must be a string"));
    if (!Once(&out.has_name, OutputLabel(), key_)) return false;
    out.name = std::move(*v.s);
    return true;
  }
  if (key_ == "parameters")
    return Fail(absl::StrCat(OutputLabel(), ": 'parameters' must be an object"));
  return UnknownKey(OutputLabel(), kOutputKeys);
}

}  // namespace

absl::StatusOr<JsonInferRequest> ReadInferJson(absl::string_view text,
                                               const JsonReadLimits& limits) {
  InferJsonReader reader(limits);
  bool ok = false;
  try {
    ok = json::sax_parse(text.data(), text.data() + text.size(), &reader,
                         json::input_format_t::json, /*strict=*/true);
  } catch (...) {
    return CurrentExceptionStatus("reading the request's JSON");
  }
  if (!ok || !reader.status().ok()) {
    return reader.status().ok() ? absl::InvalidArgumentError("the body is not valid JSON")
                                : reader.status();
  }
  return std::move(reader.result());
}

absl::Status CheckNesting(const JsonTensorData& data, absl::string_view input,
                          absl::Span<const int64_t> shape) {
  if (data.leaf_depth < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", input,
                     "': 'data' has values at different nesting levels; give it flat or "
                     "nested as the shape ",
                     ShapeString(shape)));
  }
  const size_t depth =
      data.leaf_depth > 0 ? static_cast<size_t>(data.leaf_depth) : data.lengths.size();
  if (depth <= 1 && data.lengths.size() <= 1) return absl::OkStatus();  // flat
  bool match = !data.ragged && depth == shape.size() && data.lengths.size() == shape.size();
  for (size_t d = 0; match && d < shape.size(); ++d) match = data.lengths[d] == shape[d];
  if (match) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "input '", input, "': nested 'data' does not have the shape ", ShapeString(shape),
      " (give it flat, or one list level per dimension with as many entries as the dimension)"));
}

}  // namespace reformer::serving
