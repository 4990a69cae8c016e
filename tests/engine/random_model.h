// Test-only: writes a model directory (config.json + model.safetensors under HF names,
// engine-numerics §2) with random weights scaled so that activations and logits are O(1) —
// attention is peaked and a wrong key, window or bucket shows in the logits well above 1e-4. No
// rotations file: the loader draws them from hash_seed or the default seed
// (engine/model/rotations.h).
#pragma once

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/config.h"
#include "engine/weights/safetensors.h"

namespace reformer {
namespace testing {

inline std::string WriteRandomModel(const std::string& dir, const std::string& config_json, uint32_t seed) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << config_json;
  auto c = ReformerConfig::FromJson(config_json, "config.json");
  if (!c.ok()) return std::string(c.status().message());
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> store;
  std::vector<TensorToWrite> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float stddev) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::normal_distribution<float> dist(mean, stddev);
    store.emplace_back(n);
    for (float& x : store.back()) x = dist(rng);
    tensors.push_back(F32Tensor(name, shape, store.back().data()));
  };
  const int64_t H = c->hidden_size, A = c->all_head_size(), F = c->feed_forward_size, V = c->vocab_size;
  const std::string p = "reformer.";
  add(p + "embeddings.word_embeddings.weight", {V, H}, 0, 1);
  if (c->axial_pos_embds) {
    add(p + "embeddings.position_embeddings.weights.0", {c->axial_pos_shape[0], 1, c->axial_pos_embds_dim[0]}, 0, 1);
    add(p + "embeddings.position_embeddings.weights.1", {1, c->axial_pos_shape[1], c->axial_pos_embds_dim[1]}, 0, 1);
  } else {
    add(p + "embeddings.position_embeddings.embedding.weight", {c->max_position_embeddings, H}, 0, 1);
  }
  const float in_h = 1.f / std::sqrt(static_cast<float>(H)), in_a = 1.f / std::sqrt(static_cast<float>(A));
  for (int64_t i = 0; i < c->num_layers(); ++i) {
    const std::string l = absl::StrCat(p, "encoder.layers.", i, ".");
    add(l + "attention.layer_norm.weight", {H}, 1, 0.1f);
    add(l + "attention.layer_norm.bias", {H}, 0, 0.1f);
    if (c->attn_layers[i] == AttnType::kLsh) {
      add(l + "attention.self_attention.query_key.weight", {A, H}, 0, 2 * in_h);
    } else {
      add(l + "attention.self_attention.query.weight", {A, H}, 0, 2 * in_h);
      add(l + "attention.self_attention.key.weight", {A, H}, 0, 2 * in_h);
    }
    add(l + "attention.self_attention.value.weight", {A, H}, 0, in_h);
    add(l + "attention.output.dense.weight", {H, A}, 0, in_a);
    add(l + "feed_forward.layer_norm.weight", {H}, 1, 0.1f);
    add(l + "feed_forward.layer_norm.bias", {H}, 0, 0.1f);
    add(l + "feed_forward.dense.dense.weight", {F, H}, 0, in_h);
    add(l + "feed_forward.dense.dense.bias", {F}, 0, 0.1f);
    add(l + "feed_forward.output.dense.weight", {H, F}, 0, 1.f / std::sqrt(static_cast<float>(F)));
    add(l + "feed_forward.output.dense.bias", {H}, 0, 0.1f);
  }
  add(p + "encoder.layer_norm.weight", {2 * H}, 1, 0.1f);
  add(p + "encoder.layer_norm.bias", {2 * H}, 0, 0.1f);
  add("lm_head.decoder.weight", {V, 2 * H}, 0, 2.f / std::sqrt(static_cast<float>(2 * H)));
  add("lm_head.bias", {V}, 0, 0.1f);
  const absl::Status st = WriteSafetensors(dir + "/model.safetensors", tensors);
  return st.ok() ? "" : std::string(st.message());
}

}  // namespace testing
}  // namespace reformer
