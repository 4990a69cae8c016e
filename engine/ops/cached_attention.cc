#include "engine/ops/cached_attention.h"

#include <xmmintrin.h>

#include <algorithm>
#include <cmath>

#include "engine/ops/attention.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/small_gemm.h"

namespace reformer {

void KeyNormRow(const float* u, int64_t dh, float* dst) {
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  const float inv = 1.f / std::sqrt(kernels::Active().sum_of_squares(u, dh) / static_cast<float>(dh) + 1e-6f);
  for (int64_t j = 0; j < dh; ++j) dst[j] = (u[j] * inv) / sqrt_dh;
}

namespace {

// The rows of a step's window lie anywhere in a cache of up to hundreds of MB: request them all
// before the products walk them, so that their cache misses overlap.
void PrefetchRows(const float* const* rows, int64_t n, int64_t dh) {
  const int64_t lines = (dh * static_cast<int64_t>(sizeof(float)) + 63) / 64;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t l = 0; l < lines; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(rows[j]) + 64 * l, _MM_HINT_T0);
}

}  // namespace

float AttendOneQuery(const float* q, const float* const* k_rows, const float* const* v_rows,
                     const int32_t* kpos, int64_t n, int64_t dh, int32_t self_pos, float* scores,
                     float* out) {
  PrefetchRows(k_rows, n, dh);
  PrefetchRows(v_rows, n, dh);
  DotRows(1, n, dh, &q, k_rows, scores, n);
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    if (kpos[j] == self_pos) scores[j] = kSelfMaskValue;
    m = std::max(m, scores[j]);
  }
  // p = exp(s - lse) = exp(s - m) · exp(m - lse), as the forward's blocks compute it.
  const float sum = kernels::Active().exp_shift_sum(scores, m, scores, n);
  const float lse = m + std::log(sum);
  const float scale = std::exp(m - lse);
  kernels::Active().weighted_row_sum(scores, v_rows, n, dh, scale, out);
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
