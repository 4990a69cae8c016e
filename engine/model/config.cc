#include "engine/model/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace reformer {
namespace {

using json = nlohmann::json;

struct ActivationName_ {
  const char* name;
  Activation act;
};
constexpr ActivationName_ kActivations[] = {
    {"relu", Activation::kRelu},         {"gelu", Activation::kGelu},
    {"gelu_new", Activation::kGeluNew},  {"gelu_pytorch_tanh", Activation::kGeluNew},
    {"gelu_fast", Activation::kGeluFast}, {"quick_gelu", Activation::kQuickGelu},
    {"silu", Activation::kSilu},         {"swish", Activation::kSilu},
    {"tanh", Activation::kTanh},         {"sigmoid", Activation::kSigmoid},
    {"mish", Activation::kMish},         {"linear", Activation::kLinear},
};

class Reader {
 public:
  Reader(const json& j, absl::string_view source) : j_(j), source_(source) {}

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", key, "': ", what));
  }

  absl::Status Int(const std::string& key, int64_t* out) const {
    if (!j_.contains(key) || j_[key].is_null()) return absl::OkStatus();
    const json& v = j_[key];
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return absl::OkStatus();
    }
    // An integral float (HF writes some ints as 64.0), inside int64's range: [-2^63, 2^63).
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
        v.get<double>() >= -9223372036854775808.0 && v.get<double>() < 9223372036854775808.0) {
      *out = static_cast<int64_t>(v.get<double>());
      return absl::OkStatus();
    }
    return Error(key, absl::StrCat("expected an integer, got ", v.dump()));
  }

  absl::Status Float(const std::string& key, float* out) const {
    if (!j_.contains(key) || j_[key].is_null()) return absl::OkStatus();
    const json& v = j_[key];
    if (!v.is_number()) return Error(key, absl::StrCat("expected a number, got ", v.dump()));
    if (!(std::fabs(v.get<double>()) <= std::numeric_limits<float>::max())) {
      return Error(key, absl::StrCat(v.dump(), " is outside the range of a float"));
    }
    *out = static_cast<float>(v.get<double>());
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& key, bool* out) const {
    if (!j_.contains(key) || j_[key].is_null()) return absl::OkStatus();
    const json& v = j_[key];
    if (!v.is_boolean()) return Error(key, absl::StrCat("expected true/false, got ", v.dump()));
    *out = v.get<bool>();
    return absl::OkStatus();
  }

  absl::Status IntList(const std::string& key, std::vector<int64_t>* out) const {
    if (!j_.contains(key) || j_[key].is_null()) return absl::OkStatus();
    const json& v = j_[key];
    if (!v.is_array()) return Error(key, absl::StrCat("expected a list of integers, got ", v.dump()));
    std::vector<int64_t> r;
    for (const auto& e : v) {
      if (!e.is_number_integer()) return Error(key, absl::StrCat("expected integers, got ", v.dump()));
      r.push_back(e.get<int64_t>());
    }
    *out = std::move(r);
    return absl::OkStatus();
  }

 private:
  const json& j_;
  absl::string_view source_;
};

// a * b * ... when it does not exceed `bound` (all factors >= 0), else bound + 1.
int64_t BoundedProduct(std::initializer_list<int64_t> factors, int64_t bound) {
  int64_t p = 1;
  for (int64_t f : factors) {
    if (f != 0 && p > bound / f) return bound + 1;
    p *= f;
  }
  return p;
}

int BitLength(int64_t v) {
  int n = 0;
  while (v > 0) {
    ++n;
    v >>= 1;
  }
  return n;
}

}  // namespace

const char* AttnTypeName(AttnType t) { return t == AttnType::kLsh ? "lsh" : "local"; }

const char* ActivationName(Activation a) {
  for (const auto& e : kActivations) {
    if (e.act == a) return e.name;
  }
  return "?";
}

bool ReformerConfig::has_lsh() const {
  for (auto t : attn_layers) {
    if (t == AttnType::kLsh) return true;
  }
  return false;
}

bool ReformerConfig::has_local() const {
  for (auto t : attn_layers) {
    if (t == AttnType::kLocal) return true;
  }
  return false;
}

int64_t ReformerConfig::total_buckets() const {
  int64_t n = 1;
  for (int64_t f : num_buckets) n *= f;
  return n;
}

int64_t ReformerConfig::rotation_size() const {
  int64_t n = 0;
  for (int64_t f : num_buckets) n += f;
  return n;
}

int64_t ReformerConfig::chunk_lcm() const {
  int64_t l = 1;
  if (has_lsh()) l = std::lcm(l, lsh_attn_chunk_length);
  if (has_local()) l = std::lcm(l, local_attn_chunk_length);
  return l;
}

int64_t ReformerConfig::chunk_min() const {
  int64_t m = 0;
  if (has_lsh()) m = lsh_attn_chunk_length;
  if (has_local()) m = m == 0 ? local_attn_chunk_length : std::min(m, local_attn_chunk_length);
  return m;
}

int64_t ReformerConfig::context_length() const {
  if (axial_pos_embds) {
    return std::min(max_position_embeddings, axial_pos_shape[0] * axial_pos_shape[1]);
  }
  return max_position_embeddings;
}

int64_t ReformerConfig::PaddedLength(int64_t t0) const {
  const int64_t lcm = chunk_lcm();
  if (t0 > chunk_min() && t0 % lcm != 0) return t0 + (lcm - t0 % lcm);
  return t0;
}

std::vector<int64_t> ReformerConfig::AutoNumBuckets(int64_t padded_length, int64_t lsh_chunk_length,
                                                    int64_t max_position_embeddings) {
  const int p = BitLength(2 * (padded_length / lsh_chunk_length)) - 1;
  if (p < 1) return {2};  // the layer can never hash at this length; any even count is inert
  const int64_t nb = int64_t{1} << p;
  const int64_t limit =
      2 * std::max<int64_t>(static_cast<int64_t>(std::sqrt(static_cast<double>(
                                max_position_embeddings / lsh_chunk_length))),
                            lsh_chunk_length);
  if (nb > limit) return {int64_t{1} << (p / 2), int64_t{1} << (p - p / 2)};
  return {nb};
}

absl::StatusOr<ReformerConfig> ReformerConfig::FromFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open config (missing file?)"));
  std::stringstream ss;
  ss << f.rdbuf();
  return FromJson(ss.str(), path);
}

absl::StatusOr<ReformerConfig> ReformerConfig::FromJson(absl::string_view json_text,
                                                        absl::string_view source) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  ReformerConfig c;
  Reader r(j, source);

  if (j.contains("model_type") && j["model_type"].is_string() &&
      j["model_type"].get<std::string>() != "reformer") {
    return r.Error("model_type", absl::StrCat("expected \"reformer\", got ", j["model_type"].dump()));
  }
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    c.architecture = j["architectures"][0].get<std::string>();
  }

  // attn_layers (+ num_hidden_layers override, engine-numerics §1.2).
  std::vector<std::string> names = {"local", "lsh", "local", "lsh", "local", "lsh"};
  if (j.contains("attn_layers") && !j["attn_layers"].is_null()) {
    const json& v = j["attn_layers"];
    if (!v.is_array()) return r.Error("attn_layers", "expected a list of \"lsh\"/\"local\"");
    names.clear();
    for (const auto& e : v) {
      if (!e.is_string()) return r.Error("attn_layers", absl::StrCat("entry ", e.dump(), " is not a string"));
      names.push_back(e.get<std::string>());
    }
  }
  if (names.empty()) return r.Error("attn_layers", "is empty: a model needs at least one layer");
  std::vector<AttnType> types;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "lsh") {
      types.push_back(AttnType::kLsh);
    } else if (names[i] == "local") {
      types.push_back(AttnType::kLocal);
    } else {
      return r.Error("attn_layers", absl::StrCat("unknown entry \"", names[i], "\" at index ", i,
                                                 " (expected \"lsh\" or \"local\")"));
    }
  }
  int64_t num_layers = static_cast<int64_t>(types.size());
  RETURN_IF_ERROR(r.Int("num_hidden_layers", &num_layers));
  if (num_layers <= 0) return r.Error("num_hidden_layers", absl::StrCat("must be positive, got ", num_layers));
  if (num_layers > ConfigLimits::kLayers)
    return r.Error("num_hidden_layers", absl::StrCat(num_layers, " exceeds the limit of ", ConfigLimits::kLayers));
  const bool single_type = std::all_of(types.begin(), types.end(), [&](AttnType t) { return t == types[0]; });
  if (single_type) {
    c.attn_layers.assign(static_cast<size_t>(num_layers), types[0]);
  } else {
    if (num_layers > static_cast<int64_t>(types.size())) {
      return r.Error("num_hidden_layers",
                     absl::StrCat(num_layers, " layers but attn_layers mixes types and has only ",
                                  types.size(), " entries"));
    }
    c.attn_layers.assign(types.begin(), types.begin() + num_layers);
  }

  RETURN_IF_ERROR(r.Int("hidden_size", &c.hidden_size));
  RETURN_IF_ERROR(r.Int("num_attention_heads", &c.num_attention_heads));
  RETURN_IF_ERROR(r.Int("attention_head_size", &c.attention_head_size));
  RETURN_IF_ERROR(r.Int("feed_forward_size", &c.feed_forward_size));
  RETURN_IF_ERROR(r.Int("vocab_size", &c.vocab_size));
  if (j.contains("hidden_act") && !j["hidden_act"].is_null()) {
    if (!j["hidden_act"].is_string()) return r.Error("hidden_act", "expected a string");
    c.hidden_act_name = j["hidden_act"].get<std::string>();
    bool found = false;
    for (const auto& e : kActivations) {
      if (c.hidden_act_name == e.name) {
        c.hidden_act = e.act;
        found = true;
      }
    }
    if (!found) {
      return r.Error("hidden_act", absl::StrCat("unsupported activation \"", c.hidden_act_name, "\""));
    }
  }
  RETURN_IF_ERROR(r.Bool("is_decoder", &c.is_decoder));
  RETURN_IF_ERROR(r.Float("layer_norm_eps", &c.layer_norm_eps));
  RETURN_IF_ERROR(r.Bool("axial_pos_embds", &c.axial_pos_embds));
  RETURN_IF_ERROR(r.IntList("axial_pos_shape", &c.axial_pos_shape));
  RETURN_IF_ERROR(r.IntList("axial_pos_embds_dim", &c.axial_pos_embds_dim));
  RETURN_IF_ERROR(r.Int("max_position_embeddings", &c.max_position_embeddings));
  RETURN_IF_ERROR(r.Int("lsh_attn_chunk_length", &c.lsh_attn_chunk_length));
  RETURN_IF_ERROR(r.Int("local_attn_chunk_length", &c.local_attn_chunk_length));
  RETURN_IF_ERROR(r.Int("lsh_num_chunks_before", &c.lsh_num_chunks_before));
  RETURN_IF_ERROR(r.Int("lsh_num_chunks_after", &c.lsh_num_chunks_after));
  RETURN_IF_ERROR(r.Int("local_num_chunks_before", &c.local_num_chunks_before));
  RETURN_IF_ERROR(r.Int("local_num_chunks_after", &c.local_num_chunks_after));
  RETURN_IF_ERROR(r.Int("num_hashes", &c.num_hashes));
  RETURN_IF_ERROR(r.Int("chunk_size_feed_forward", &c.chunk_size_feed_forward));
  RETURN_IF_ERROR(r.Int("chunk_size_lm_head", &c.chunk_size_lm_head));
  RETURN_IF_ERROR(r.Int("pad_token_id", &c.pad_token_id));
  RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    RETURN_IF_ERROR(r.IntList("eos_token_id", &c.eos_token_ids));
  } else if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    int64_t eos = 0;
    RETURN_IF_ERROR(r.Int("eos_token_id", &eos));
    c.eos_token_ids = {eos};
  }
  if (j.contains("hash_seed") && !j["hash_seed"].is_null()) {
    int64_t seed = 0;
    RETURN_IF_ERROR(r.Int("hash_seed", &seed));
    c.hash_seed = seed;
  }

  // num_buckets: int, list of ints, or null (resolved below once the rest is validated).
  if (j.contains("num_buckets") && !j["num_buckets"].is_null()) {
    const json& v = j["num_buckets"];
    if (v.is_number_integer()) {
      c.num_buckets = {v.get<int64_t>()};
    } else if (v.is_array()) {
      RETURN_IF_ERROR(r.IntList("num_buckets", &c.num_buckets));
      if (c.num_buckets.empty()) return r.Error("num_buckets", "is an empty list");
    } else {
      return r.Error("num_buckets", absl::StrCat("expected an int, a list of ints or null, got ", v.dump()));
    }
  } else {
    c.num_buckets_auto = true;
  }

  RETURN_IF_ERROR(c.Validate(source));
  if (c.num_buckets_auto) {
    c.num_buckets = AutoNumBuckets(c.max_position_embeddings, c.lsh_attn_chunk_length,
                                   c.max_position_embeddings);
    RETURN_IF_ERROR(c.Validate(source));  // the resolved buckets against the bounds
  }
  return c;
}

absl::Status ReformerConfig::Validate(absl::string_view source) const {
  auto err = [&](const std::string& key, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", key, "': ", what));
  };
  auto positive = [&](const char* key, int64_t v) -> absl::Status {
    if (v <= 0) return err(key, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  auto non_negative = [&](const char* key, int64_t v) -> absl::Status {
    if (v < 0) return err(key, absl::StrCat("must be >= 0, got ", v));
    return absl::OkStatus();
  };
  if (attn_layers.empty()) return err("attn_layers", "no layers");
  RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  RETURN_IF_ERROR(positive("attention_head_size", attention_head_size));
  RETURN_IF_ERROR(positive("feed_forward_size", feed_forward_size));
  RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  RETURN_IF_ERROR(positive("lsh_attn_chunk_length", lsh_attn_chunk_length));
  RETURN_IF_ERROR(positive("local_attn_chunk_length", local_attn_chunk_length));
  RETURN_IF_ERROR(non_negative("lsh_num_chunks_before", lsh_num_chunks_before));
  RETURN_IF_ERROR(non_negative("lsh_num_chunks_after", lsh_num_chunks_after));
  RETURN_IF_ERROR(non_negative("local_num_chunks_before", local_num_chunks_before));
  RETURN_IF_ERROR(non_negative("local_num_chunks_after", local_num_chunks_after));
  RETURN_IF_ERROR(positive("num_hashes", num_hashes));
  RETURN_IF_ERROR(non_negative("chunk_size_feed_forward", chunk_size_feed_forward));
  RETURN_IF_ERROR(non_negative("chunk_size_lm_head", chunk_size_lm_head));
  if (!(layer_norm_eps > 0.0f) || !std::isfinite(layer_norm_eps)) return err("layer_norm_eps", "must be positive and finite");
  if (pad_token_id < 0 || pad_token_id >= vocab_size) {
    return err("pad_token_id", absl::StrCat(pad_token_id, " is outside [0, vocab_size=", vocab_size, ")"));
  }
  for (int64_t eos : eos_token_ids) {  // an id the model cannot produce would never end a sequence
    if (eos < 0 || eos >= vocab_size) {
      return err("eos_token_id", absl::StrCat(eos, " is outside [0, vocab_size=", vocab_size, ")"));
    }
  }
  if (tie_word_embeddings) {
    return err("tie_word_embeddings",
               "is true: Reformer ties a [V, H] embedding to a [V, 2H] decoder, which cannot work "
               "(Hugging Face fails with a shape error); set it to false");
  }
  if (is_decoder && (lsh_num_chunks_after != 0 || local_num_chunks_after != 0)) {
    return err(lsh_num_chunks_after != 0 ? "lsh_num_chunks_after" : "local_num_chunks_after",
               "must be 0 for a causal model (is_decoder: true): look-ahead chunks would see the future");
  }
  if (axial_pos_embds) {
    if (axial_pos_shape.size() != 2) {
      return err("axial_pos_shape", absl::StrCat("expected 2 factors, got ", axial_pos_shape.size()));
    }
    if (axial_pos_embds_dim.size() != 2) {
      return err("axial_pos_embds_dim", absl::StrCat("expected 2 dims, got ", axial_pos_embds_dim.size()));
    }
    for (int64_t v : axial_pos_shape) {
      if (v <= 0) return err("axial_pos_shape", "factors must be positive");
    }
    for (int64_t v : axial_pos_embds_dim) {
      if (v <= 0) return err("axial_pos_embds_dim", "dims must be positive");
    }
    // Compared without forming the sum: both dims may be near 2^63 here (bounds come later).
    if (axial_pos_embds_dim[0] != hidden_size - axial_pos_embds_dim[1]) {
      return err("axial_pos_embds_dim",
                 absl::StrCat("dims ", axial_pos_embds_dim[0], " + ", axial_pos_embds_dim[1],
                              " must sum to hidden_size ", hidden_size));
    }
  }
  if (!num_buckets_auto || !num_buckets.empty()) {
    if (num_buckets.empty()) return err("num_buckets", "is empty");
    for (int64_t f : num_buckets) {
      if (f < 2 || f % 2 != 0) {
        return err("num_buckets", absl::StrCat("every bucket count must be even and >= 2, got ", f));
      }
    }
  }
  return ValidateBounds(source);
}

// The bounds of ConfigLimits, each naming the field(s) and the bound.
absl::Status ReformerConfig::ValidateBounds(absl::string_view source) const {
  using L = ConfigLimits;
  auto err = [&](const std::string& key, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", key, "': ", what));
  };
  auto at_most = [&](const char* key, int64_t v, int64_t bound) -> absl::Status {
    if (v > bound) return err(key, absl::StrCat(v, " exceeds the limit of ", bound));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(at_most("num_hidden_layers", num_layers(), L::kLayers));
  RETURN_IF_ERROR(at_most("hidden_size", hidden_size, L::kHiddenSize));
  RETURN_IF_ERROR(at_most("num_attention_heads", num_attention_heads, L::kHeads));
  RETURN_IF_ERROR(at_most("attention_head_size", attention_head_size, L::kHeadSize));
  if (BoundedProduct({num_attention_heads, attention_head_size}, L::kAllHeadSize) > L::kAllHeadSize)
    return err("num_attention_heads", absl::StrCat("num_attention_heads x attention_head_size exceeds ", L::kAllHeadSize));
  RETURN_IF_ERROR(at_most("feed_forward_size", feed_forward_size, L::kFeedForward));
  RETURN_IF_ERROR(at_most("vocab_size", vocab_size, L::kVocab));
  RETURN_IF_ERROR(at_most("max_position_embeddings", max_position_embeddings, L::kPositions));
  if (axial_pos_embds) {
    for (int64_t v : axial_pos_shape) RETURN_IF_ERROR(at_most("axial_pos_shape", v, L::kPositions));
  }
  const struct {
    const char *chunk, *before, *after;
    int64_t c, b, a;
  } kinds[] = {{"lsh_attn_chunk_length", "lsh_num_chunks_before", "lsh_num_chunks_after", lsh_attn_chunk_length,
                lsh_num_chunks_before, lsh_num_chunks_after},
               {"local_attn_chunk_length", "local_num_chunks_before", "local_num_chunks_after",
                local_attn_chunk_length, local_num_chunks_before, local_num_chunks_after}};
  for (const auto& k : kinds) {
    RETURN_IF_ERROR(at_most(k.chunk, k.c, L::kPositions));
    RETURN_IF_ERROR(at_most(k.before, k.b, L::kChunksAround));
    RETURN_IF_ERROR(at_most(k.after, k.a, L::kChunksAround));
    if (BoundedProduct({k.c, k.c, 1 + k.b + k.a}, L::kAttentionBlock) > L::kAttentionBlock)
      return err(k.chunk, absl::StrCat(k.chunk, "^2 x (1 + ", k.before, " + ", k.after, ") = ", k.c, "^2 x ",
                                       1 + k.b + k.a, " exceeds ", L::kAttentionBlock,
                                       " (scores of one attention block)"));
  }
  RETURN_IF_ERROR(at_most("num_hashes", num_hashes, L::kNumHashes));
  if (num_hashes * context_length() > L::kInt32)
    return err("num_hashes", absl::StrCat("num_hashes x the context (", num_hashes, " x ", context_length(),
                                          ") exceeds ", L::kInt32, " (32-bit positions of all hash rounds)"));
  if (num_buckets.empty()) return absl::OkStatus();  // null: resolved from max_position_embeddings
  if (static_cast<int64_t>(num_buckets.size()) > L::kBucketFactors)
    return err("num_buckets", absl::StrCat(num_buckets.size(), " factors exceed the limit of ", L::kBucketFactors));
  int64_t buckets = 1, half = 0;
  for (int64_t f : num_buckets) {
    RETURN_IF_ERROR(at_most("num_buckets", f, L::kBuckets));
    buckets = BoundedProduct({buckets, f}, L::kBuckets);
    half += f / 2;
  }
  if (buckets > L::kBuckets)
    return err("num_buckets", absl::StrCat("the product of the bucket counts exceeds ", L::kBuckets));
  if (num_hashes * (buckets + 1) > L::kInt32)
    return err("num_hashes", absl::StrCat("num_hashes x (buckets + 1) = ", num_hashes, " x ", buckets + 1,
                                          " exceeds ", L::kInt32, " (32-bit bucket keys)"));
  if (num_hashes * half > L::kHashWidth)
    return err("num_hashes", absl::StrCat("num_hashes x rotation size / 2 = ", num_hashes, " x ", half, " exceeds ",
                                          L::kHashWidth, " (hash projections of one position)"));
  if (BoundedProduct({num_attention_heads, attention_head_size, num_hashes, half}, L::kRotations) > L::kRotations)
    return err("num_hashes", absl::StrCat("num_attention_heads x attention_head_size x num_hashes x rotation size / 2",
                                          " exceeds ", L::kRotations, " (LSH rotations of one layer)"));
  return absl::OkStatus();
}

std::string ReformerConfig::Summary() const {
  std::vector<std::string> layers;
  for (auto t : attn_layers) layers.push_back(AttnTypeName(t));
  return absl::StrCat("layers=[", absl::StrJoin(layers, ","), "] H=", hidden_size,
                      " heads=", num_attention_heads, "x", attention_head_size,
                      " F=", feed_forward_size, " V=", vocab_size, " act=", hidden_act_name,
                      " causal=", is_decoder ? "yes" : "no", " max_pos=", max_position_embeddings,
                      " chunks lsh/local=", lsh_attn_chunk_length, "/", local_attn_chunk_length,
                      " hashes=", num_hashes, " buckets=[", absl::StrJoin(num_buckets, ","), "]",
                      num_buckets_auto ? " (auto)" : "", axial_pos_embds ? " axial" : " learned-pos");
}

}  // namespace reformer
