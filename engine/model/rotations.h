// LSH rotations when the model directory has no rotations.safetensors.
//
// Hugging Face draws `torch.randn([nh, dh, nH, rs/2])` for each hashing layer at every forward call,
// so its outputs are random unless the rotations are fixed. We fix them once per model:
//  - config `hash_seed` set: every LSH layer gets the tensor HF draws after torch.manual_seed(hash_seed)
//    (HF reseeds before each draw, so all layers share it);
//  - otherwise, with seed s (LoadOptions::rotation_seed, default 0): the tensors HF's first forward
//    draws after torch.manual_seed(s), layer by layer in order.
// The generator reproduces torch's CPU algorithm (MT19937, 24-bit uniforms, Box–Muller in blocks of
// 16; for fewer than 16 values the double-precision path). Values match torch.randn to within float
// rounding of log/sin/cos (torch's AVX2 build uses vectorised math); for bit-exact HF rotations write
// rotations.safetensors with tools/convert_hf.py.
#pragma once

#include <cstdint>
#include <vector>

namespace reformer {

class TorchLikeNormalGenerator {
 public:
  explicit TorchLikeNormalGenerator(uint64_t seed);
  // Fills `n` standard normal floats the way torch.randn(n) does after the same generator state.
  std::vector<float> Randn(int64_t n);

 private:
  uint32_t NextU32();
  void Twist();
  uint32_t state_[624];
  int index_ = 624;
  bool has_cached_normal_ = false;
  double cached_normal_ = 0;
};

}  // namespace reformer
