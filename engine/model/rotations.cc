#include "engine/model/rotations.h"

#include <cmath>

namespace reformer {

TorchLikeNormalGenerator::TorchLikeNormalGenerator(uint64_t seed) {
  // torch seeds its mt19937 with the low 32 bits (standard init_genrand).
  state_[0] = static_cast<uint32_t>(seed & 0xffffffffu);
  for (int i = 1; i < 624; ++i) {
    state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  index_ = 624;
}

void TorchLikeNormalGenerator::Twist() {
  constexpr uint32_t kUpper = 0x80000000u, kLower = 0x7fffffffu, kMatrix = 0x9908b0dfu;
  for (int i = 0; i < 624; ++i) {
    const uint32_t y = (state_[i] & kUpper) | (state_[(i + 1) % 624] & kLower);
    state_[i] = state_[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
  }
  index_ = 0;
}

uint32_t TorchLikeNormalGenerator::NextU32() {
  if (index_ >= 624) Twist();
  uint32_t y = state_[index_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

std::vector<float> TorchLikeNormalGenerator::Randn(int64_t n) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  auto uniform_f = [&]() {
    return static_cast<float>((NextU32() & ((1u << 24) - 1)) * std::ldexp(1.0, -24));
  };
  auto fill16 = [](float* d) {
    for (int j = 0; j < 8; ++j) {
      const float u1 = 1 - d[j];
      const float u2 = d[j + 8];
      const float radius = std::sqrt(-2 * std::log(u1));
      const float theta = 2.0f * static_cast<float>(M_PI) * u2;
      d[j] = radius * std::cos(theta);
      d[j + 8] = radius * std::sin(theta);
    }
  };
  if (n >= 16) {
    for (int64_t i = 0; i < n; ++i) out[i] = uniform_f();
    for (int64_t i = 0; i + 16 <= n; i += 16) fill16(out.data() + i);
    if (n % 16 != 0) {
      float* d = out.data() + n - 16;
      for (int j = 0; j < 16; ++j) d[j] = uniform_f();
      fill16(d);
    }
    return out;
  }
  // Small tensors: torch's double normal_distribution, one value per element, caching the pair.
  for (int64_t i = 0; i < n; ++i) {
    if (has_cached_normal_) {
      has_cached_normal_ = false;
      out[i] = static_cast<float>(cached_normal_);
      continue;
    }
    auto uniform_d = [&]() {
      const uint64_t hi = NextU32();
      const uint64_t lo = NextU32();
      const uint64_t r = (hi << 32) | lo;
      return static_cast<double>(r & ((uint64_t{1} << 53) - 1)) * std::ldexp(1.0, -53);
    };
    const double u1 = uniform_d();
    const double u2 = uniform_d();
    const double r = std::sqrt(-2.0 * std::log1p(-u2));
    const double theta = 2.0 * M_PI * u1;
    cached_normal_ = r * std::sin(theta);
    has_cached_normal_ = true;
    out[i] = static_cast<float>(r * std::cos(theta));
  }
  return out;
}

}  // namespace reformer
