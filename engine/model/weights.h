// ModelWeights: every parameter of a Reformer LM as float32, under HF names (engine-numerics §2).
// Tensors point into the mmap'd model.safetensors (f32 files) or into owned buffers
// (f16/bf16 converted at load). Immutable after load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"

namespace reformer {

class SafetensorsFile;

// A read-only float32 view with its shape.
struct WeightView {
  const float* data = nullptr;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct LayerWeights {
  AttnType type = AttnType::kLocal;
  WeightView attn_ln_weight, attn_ln_bias;  // [H]
  WeightView query_key;                     // LSH: [nh*dh, H]
  WeightView query, key;                    // local: [nh*dh, H]
  WeightView value;                         // [nh*dh, H]
  WeightView attn_out;                      // [H, nh*dh]
  WeightView ff_ln_weight, ff_ln_bias;      // [H]
  WeightView ff_in_weight, ff_in_bias;      // [F, H], [F]
  WeightView ff_out_weight, ff_out_bias;    // [H, F], [H]
  // LSH rotations [nh, dh, nH, rs/2] (LSH layers only).
  WeightView rotations;
};

struct ModelWeights {
  WeightView word_embeddings;  // [V, H]
  WeightView axial_pos0;       // [a0, 1, d0] (axial)
  WeightView axial_pos1;       // [1, a1, d1] (axial)
  WeightView position_embeddings;  // [max_pos, H] (learned)
  std::vector<LayerWeights> layers;
  WeightView final_ln_weight, final_ln_bias;  // [2H]
  WeightView lm_weight;                       // [V, 2H]
  WeightView lm_bias;                         // [V]

  // Storage that the views point into (mmaps, converted buffers, generated rotations).
  std::vector<std::shared_ptr<const void>> storage;
  size_t total_bytes = 0;

  // Loads from `model_path` (and `rotations_path`, may be empty). When rotations are absent they
  // are drawn from `seed` (see rotations.h). Errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const ReformerConfig& config,
                                                            const std::string& model_path,
                                                            const std::string& rotations_path,
                                                            int64_t seed);
};

}  // namespace reformer
