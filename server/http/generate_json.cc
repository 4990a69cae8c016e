#include "server/http/generate_json.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/request/exception_status.h"
#include "server/request/tensor_inputs.h"

namespace reformer::serving {
namespace {

using nlohmann::json;

constexpr char kKnownRoot[] = "text_input, input_ids, parameters, id, or a parameter";
constexpr char kKnownParams[] =
    "max_tokens, temperature, top_k, top_p, seed, stop, mode, ignore_eos, return_logprobs, "
    "priority, timeout, stream";

// One scalar JSON value as the SAX parser reports it.
struct Scalar {
  enum Kind { kNull, kBool, kInt, kUint, kFloat, kString } kind = kNull;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool b = false;
  std::string* s = nullptr;  // kString (may be moved from)

  bool integer() const { return kind == kInt || kind == kUint; }
  bool number() const { return integer() || kind == kFloat; }
  double as_double() const { return kind == kInt ? double(i) : kind == kUint ? double(u) : d; }
  // The integer clamped to [lo, hi].
  int64_t Clamped(int64_t lo, int64_t hi) const {
    if (kind == kUint) return u > static_cast<uint64_t>(hi) ? hi : static_cast<int64_t>(u);
    return i < lo ? lo : i > hi ? hi : i;
  }
};

std::string Describe(const Scalar& v) {
  switch (v.kind) {
    case Scalar::kNull: return "null";
    case Scalar::kBool: return v.b ? "true" : "false";
    case Scalar::kInt: return absl::StrCat(v.i);
    case Scalar::kUint: return absl::StrCat(v.u);
    case Scalar::kFloat: return absl::StrCat(v.d);
    case Scalar::kString: return "a string";
  }
  return "a value";
}

// A double as the float the request holds: beyond float's range is infinity (Validate refuses it).
float ToFloat(double d) {
  if (std::fabs(d) > std::numeric_limits<float>::max()) {
    return d < 0 ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
  }
  return static_cast<float>(d);
}

enum class Ctx : uint8_t { kRoot, kParams, kIds, kStop };

// The parameters a request may give (each at most once, at the top level or under "parameters").
enum Param : int {
  kMaxTokens, kTemperature, kTopK, kTopP, kSeed, kStop, kMode, kIgnoreEos, kLogprobs, kPriority,
  kTimeout, kStream, kNumParams
};
constexpr const char* kParamNames[kNumParams] = {
    "max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "mode", "ignore_eos",
    "return_logprobs", "priority", "timeout", "stream"};

int ParamIndex(const std::string& key) {
  for (int p = 0; p < kNumParams; ++p) {
    if (key == kParamNames[p]) return p;
  }
  return -1;
}

// The nlohmann SAX interface (json_sax.hpp); every method returns false to stop at an error.
class GenerateJsonReader {
 public:
  GenerateJsonReader(const ServedModel& model, const GenerateLimits& limits, GenerateRequest* r,
                     DecodedGenerateJson* out)
      : model_(model), limits_(limits), r_(r), out_(out) {}

  bool null() { return Value(Scalar{}); }
  bool boolean(bool v) {
    Scalar s{Scalar::kBool};
    s.b = v;
    return Value(s);
  }
  bool number_integer(json::number_integer_t v) { return Value(Scalar{Scalar::kInt, v}); }
  bool number_unsigned(json::number_unsigned_t v) { return Value(Scalar{Scalar::kUint, 0, v}); }
  bool number_float(json::number_float_t v, const std::string&) {
    Scalar s{Scalar::kFloat};
    s.d = v;
    return Value(s);
  }
  bool string(std::string& v) {
    Scalar s{Scalar::kString};
    s.s = &v;
    return Value(s);
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
  bool has_text() const { return has_text_; }
  bool has_ids() const { return has_ids_; }
  std::string& text() { return text_; }

 private:
  bool Fail(absl::string_view message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(message);
    return false;
  }
  bool Once(bool* seen, absl::string_view what) {
    if (*seen) return Fail(absl::StrCat("'", what, "' is given twice"));
    *seen = true;
    return true;
  }
  bool UnknownKey(bool root) {
    return Fail(root ? absl::StrCat("unknown key '", key_.substr(0, 64), "' (known: ", kKnownRoot, ": ",
                                    kKnownParams, ")")
                     : absl::StrCat("unknown parameter '", key_.substr(0, 64), "' (known: ", kKnownParams, ")"));
  }
  bool Open(bool object);
  bool Close() {
    stack_.pop_back();
    return true;
  }
  bool Value(const Scalar& v);
  bool RootValue(const Scalar& v);
  bool ParamValue(int param, const Scalar& v);
  bool NumberParam(int param, const Scalar& v);
  bool Id(const Scalar& v);
  bool Stop(const Scalar& v);

  const ServedModel& model_;
  const GenerateLimits limits_;
  GenerateRequest* const r_;
  DecodedGenerateJson* const out_;
  absl::Status status_;
  std::vector<Ctx> stack_;
  std::string key_;  // the last key of the innermost open object
  bool seen_[kNumParams] = {};
  bool has_text_ = false, has_ids_ = false, has_params_ = false, has_id_ = false;
  std::string text_;
};

bool GenerateJsonReader::Open(bool object) {
  if (stack_.empty()) {
    if (!object) return Fail("the body must be a JSON object (a generate request)");
    stack_.push_back(Ctx::kRoot);
    return true;
  }
  const Ctx parent = stack_.back();
  if (parent == Ctx::kRoot && key_ == "parameters") {
    if (!object) return Fail("'parameters' must be an object");
    stack_.push_back(Ctx::kParams);
    return Once(&has_params_, "parameters");
  }
  if (parent == Ctx::kRoot && key_ == "input_ids") {
    if (object) return Fail("'input_ids' must be a list of token ids");
    stack_.push_back(Ctx::kIds);
    return Once(&has_ids_, "input_ids");
  }
  if ((parent == Ctx::kRoot || parent == Ctx::kParams) && key_ == "stop" && !object) {
    stack_.push_back(Ctx::kStop);
    return Once(&seen_[kStop], "stop");
  }
  if (parent == Ctx::kIds) return Fail("'input_ids' must be a flat list of token ids (one prompt)");
  if (parent == Ctx::kStop) return Fail("'stop' must be a string or a list of strings");
  // A list or object where a known key wants a scalar, or an unknown key.
  if (parent == Ctx::kRoot && (key_ == "text_input" || key_ == "id")) {
    return Fail(absl::StrCat("'", key_, "' must be a string"));
  }
  if (ParamIndex(key_) < 0) return UnknownKey(parent == Ctx::kRoot);
  if (key_ == "stop") return Fail("parameter 'stop' must be a string or a list of strings");
  return Fail(absl::StrCat("parameter '", key_, "' cannot be a list or an object"));
}

bool GenerateJsonReader::Value(const Scalar& v) {
  if (stack_.empty()) return Fail("the body must be a JSON object (a generate request)");
  switch (stack_.back()) {
    case Ctx::kRoot: return RootValue(v);
    case Ctx::kParams: {
      const int p = ParamIndex(key_);
      if (p < 0) return UnknownKey(/*root=*/false);
      return ParamValue(p, v);
    }
    case Ctx::kIds: return Id(v);
    case Ctx::kStop: return Stop(v);
  }
  return true;
}

bool GenerateJsonReader::RootValue(const Scalar& v) {
  if (key_ == "text_input") {
    if (v.kind != Scalar::kString) return Fail("'text_input' must be a string");
    if (!Once(&has_text_, "text_input")) return false;
    text_ = std::move(*v.s);
    return true;
  }
  if (key_ == "id") {
    if (v.kind != Scalar::kString) return Fail("'id' must be a string");
    if (!Once(&has_id_, "id")) return false;
    r_->id = std::move(*v.s);
    return true;
  }
  if (key_ == "input_ids") return Fail("'input_ids' must be a list of token ids");
  if (key_ == "parameters") return Fail("'parameters' must be an object");
  const int p = ParamIndex(key_);
  if (p < 0) return UnknownKey(/*root=*/true);
  return ParamValue(p, v);
}

bool GenerateJsonReader::ParamValue(int p, const Scalar& v) {
  const char* name = kParamNames[p];
  if (!Once(&seen_[p], name)) return false;
  auto type_error = [&](absl::string_view expected) {
    return Fail(absl::StrCat("parameter '", name, "' must be ", expected, ", got ", Describe(v)));
  };
  switch (p) {
    case kStop:
      if (v.kind != Scalar::kString) return type_error("a string or a list of strings");
      return Stop(v);
    case kMode:
      if (v.kind != Scalar::kString) return type_error("\"cached\" or \"recompute\"");
      if (*v.s != "cached" && *v.s != "recompute") {
        return Fail(absl::StrCat("parameter 'mode' must be \"cached\" or \"recompute\", got \"",
                                 v.s->substr(0, 64), "\""));
      }
      r_->mode = *v.s == "recompute" ? DecodeMode::kRecompute : DecodeMode::kCached;
      return true;
    case kIgnoreEos:
    case kLogprobs:
    case kStream:
      if (v.kind != Scalar::kBool) return type_error("a boolean");
      if (p == kIgnoreEos) r_->ignore_eos = v.b;
      if (p == kLogprobs) r_->return_logprobs = v.b;
      if (p == kStream) out_->stream = v.b;
      return true;
    default:
      return NumberParam(p, v);
  }
}

bool GenerateJsonReader::NumberParam(int p, const Scalar& v) {
  const char* name = kParamNames[p];
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const bool wants_integer = p != kTemperature && p != kTopP;
  if (wants_integer ? !v.integer() : !v.number()) {
    return Fail(absl::StrCat("parameter '", name, "' must be ", wants_integer ? "an integer" : "a number",
                             ", got ", Describe(v)));
  }
  const bool negative = v.kind == Scalar::kInt && v.i < 0;
  if ((p == kSeed || p == kPriority || p == kTimeout) && negative) {
    return Fail(absl::StrCat("parameter '", name, "' must be >= 0, got ", v.i));
  }
  switch (p) {
    case kMaxTokens: r_->max_new_tokens = v.Clamped(std::numeric_limits<int64_t>::min(), kMax); break;
    case kTemperature: r_->temperature = ToFloat(v.as_double()); break;
    case kTopK:
      r_->top_k = static_cast<int32_t>(
          v.Clamped(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
      break;
    case kTopP: r_->top_p = ToFloat(v.as_double()); break;
    case kSeed: r_->seed = v.kind == Scalar::kUint ? v.u : static_cast<uint64_t>(v.i); break;
    case kPriority: r_->priority = static_cast<int>(v.Clamped(0, int64_t{1} << 30)); break;
    case kTimeout: {
      absl::StatusOr<std::optional<absl::Duration>> t = TimeoutParameter(v.Clamped(0, kMax));
      if (!t.ok()) return Fail(t.status().message());
      out_->timeout = *t;
      break;
    }
  }
  return true;
}

bool GenerateJsonReader::Id(const Scalar& v) {
  const size_t at = r_->prompt.size();
  if (!v.integer()) return Fail(absl::StrCat("input_ids[", at, "] must be an integer token id, got ", Describe(v)));
  if (static_cast<int64_t>(at) >= model_.context()) {
    return Fail(absl::StrCat("'input_ids' has more than ", model_.context(),
                             " ids, the model's context (max_position_embeddings)"));
  }
  const int64_t id = v.Clamped(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  if (id < std::numeric_limits<int32_t>::min() ||
      id > std::numeric_limits<int32_t>::max()) {
    return Fail(absl::StrCat("prompt token id ", Describe(v), " at position ", at, " is outside [0, ",
                             model_.config.vocab_size, ")"));
  }
  r_->prompt.push_back(static_cast<int32_t>(id));
  return true;
}

bool GenerateJsonReader::Stop(const Scalar& v) {
  if (v.kind != Scalar::kString) {
    return Fail(absl::StrCat("parameter 'stop' must be a string or a list of strings, got ", Describe(v)));
  }
  if (static_cast<int64_t>(r_->stop.size()) >= limits_.max_stop_strings) {
    return Fail(absl::StrCat("the request has more than ", limits_.max_stop_strings,
                             " stop strings, above the limit of ", limits_.max_stop_strings));
  }
  r_->stop.push_back(std::move(*v.s));
  return true;
}

// The prompt from text_input or input_ids (exactly one of them).
absl::Status ResolvePrompt(GenerateJsonReader& reader, const ServedModel& model, GenerateRequest* r) {
  if (reader.has_text() == reader.has_ids()) {
    return absl::InvalidArgumentError(reader.has_text()
                                          ? "give 'text_input' or 'input_ids', not both"
                                          : "the request needs 'text_input' (text) or 'input_ids' (token ids)");
  }
  if (!reader.has_text()) return absl::OkStatus();
  if (model.tokenizer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'text_input' is text but model '", model.name,
                                                   "' has no tokenizer; send 'input_ids'"));
  }
  absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(reader.text());
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("'text_input': ", ids.status().message()));
  r->prompt = *std::move(ids);
  r->text_input = true;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedGenerateJson> DecodeGenerateJson(absl::string_view body, const ServedModel& model,
                                                       const GenerateLimits& limits) {
  DecodedGenerateJson out;
  out.request = std::make_unique<GenerateRequest>();
  out.request->max_new_tokens = kDefaultMaxTokens;
  GenerateJsonReader reader(model, limits, out.request.get(), &out);
  bool ok = false;
  try {
    ok = json::sax_parse(body.data(), body.data() + body.size(), &reader, json::input_format_t::json,
                         /*strict=*/true);
  } catch (...) {
    return CurrentExceptionStatus("reading the generate request's JSON");
  }
  if (!ok || !reader.status().ok()) {
    return reader.status().ok() ? absl::InvalidArgumentError("the body is not valid JSON") : reader.status();
  }
  if (absl::Status s = ResolvePrompt(reader, model, out.request.get()); !s.ok()) return s;
  return out;
}

}  // namespace reformer::serving
