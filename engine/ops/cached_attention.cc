#include "engine/ops/cached_attention.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/attention.h"
#include "engine/ops/simd_math.h"
#include "engine/ops/small_gemm.h"

namespace reformer {

void KeyNormRow(const float* u, int64_t dh, float* dst) {
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  const float inv = 1.f / std::sqrt(simd::SumOfSquares(u, dh) / static_cast<float>(dh) + 1e-6f);
  for (int64_t j = 0; j < dh; ++j) dst[j] = (u[j] * inv) / sqrt_dh;
}

float AttendOneQuery(const float* q, const float* const* k_rows, const float* const* v_rows,
                     const int32_t* kpos, int64_t n, int64_t dh, int32_t self_pos, float* scores,
                     float* out) {
  DotRows(1, n, dh, &q, k_rows, scores, n);
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    if (kpos[j] == self_pos) scores[j] = kSelfMaskValue;
    m = std::max(m, scores[j]);
  }
  // p = exp(s - lse) = exp(s - m) · exp(m - lse), as the forward's blocks compute it.
  const float sum = simd::ExpShiftSum(scores, m, scores, n);
  const float lse = m + std::log(sum);
  const float scale = std::exp(m - lse);
  GemmRowsOut(1, dh, n, scores, n, v_rows, &scale, &out);
  return lse;
}

void CombineRounds(const float* o, const float* lse, int64_t rounds, int64_t dh, float* out) {
  float m = -INFINITY;
  for (int64_t r = 0; r < rounds; ++r) m = std::max(m, lse[r]);
  float sum = 0.f;
  for (int64_t r = 0; r < rounds; ++r) sum += std::exp(lse[r] - m);
  const float total = m + std::log(sum);
  for (int64_t j = 0; j < dh; ++j) out[j] = 0.f;
  for (int64_t r = 0; r < rounds; ++r) {
    const float w = std::exp(lse[r] - total);
    for (int64_t j = 0; j < dh; ++j) out[j] += o[r * dh + j] * w;
  }
}

}  // namespace reformer
