// Test helpers: locate the parity fixtures, read inputs.json and expected.safetensors.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/weights/safetensors.h"
#include "nlohmann/json.hpp"

namespace reformer {
namespace testing {

inline std::string FixtureRoot() {
  const char* src = std::getenv("REFORMER_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/fixtures";
}

inline const std::vector<std::string>& FixtureNames() {
  static const std::vector<std::string> kNames = {
      "f1_mixed_causal_multihash_rightpad",  "f2_lsh_factorized_4hash_gelu_ffchunk",
      "f3_bidirectional_lookahead_noaxial",  "f4_internal_pad_to_lcm_chunks",
      "f5_short_seq_standard_attention",     "f6_auto_buckets_leftpad_6layers"};
  return kNames;
}

struct FixtureInputs {
  int64_t batch = 0, length = 0;
  std::vector<int32_t> ids;    // [B*T]
  std::vector<uint8_t> mask;   // [B*T] or empty
};

inline FixtureInputs ReadInputs(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str());
  FixtureInputs in;
  const auto& ids = j.at("input_ids");
  in.batch = static_cast<int64_t>(ids.size());
  in.length = static_cast<int64_t>(ids[0].size());
  for (const auto& row : ids)
    for (const auto& v : row) in.ids.push_back(v.get<int32_t>());
  if (j.contains("attention_mask") && !j["attention_mask"].is_null())
    for (const auto& row : j["attention_mask"])
      for (const auto& v : row) in.mask.push_back(static_cast<uint8_t>(v.get<int>()));
  return in;
}

// Expected tensors; floats and ints converted from the file's dtypes.
struct Expected {
  std::unique_ptr<SafetensorsFile> file;
  std::vector<float> Floats(const std::string& name) const {
    const TensorEntry* e = file->Find(name);
    if (!e) return {};
    std::vector<float> out(e->numel());
    std::memcpy(out.data(), e->data, out.size() * sizeof(float));
    return out;
  }
  std::vector<int32_t> Ints(const std::string& name) const {
    const TensorEntry* e = file->Find(name);
    if (!e) return {};
    std::vector<int32_t> out(e->numel());
    if (e->dtype == DType::kI32) {
      std::memcpy(out.data(), e->data, out.size() * sizeof(int32_t));
    } else if (e->dtype == DType::kI64) {
      for (size_t i = 0; i < out.size(); ++i) {
        int64_t v;
        std::memcpy(&v, e->data + i * 8, 8);
        out[i] = static_cast<int32_t>(v);
      }
    } else if (e->dtype == DType::kU8 || e->dtype == DType::kBool) {
      for (size_t i = 0; i < out.size(); ++i) out[i] = e->data[i];
    }
    return out;
  }
  std::vector<int64_t> Shape(const std::string& name) const {
    const TensorEntry* e = file->Find(name);
    return e ? e->shape : std::vector<int64_t>{};
  }
};

inline Expected ReadExpected(const std::string& path) {
  Expected e;
  auto f = SafetensorsFile::Open(path);
  if (f.ok()) e.file = std::move(f).value();
  return e;
}

}  // namespace testing
}  // namespace reformer
