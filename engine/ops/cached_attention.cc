#include "engine/ops/cached_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

// out[0..dh) = scale · Σ_j w[j] · rows[j][0..dh), 64 columns at a time (eight independent sums).
void WeightedRowSum(const float* w, const float* const* rows, int64_t n, int64_t dh, float scale, float* out) {
  int64_t c0 = 0;
  for (; c0 + 64 <= dh; c0 += 64) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t j = 0; j < n; ++j) {
      const __m256 x = _mm256_broadcast_ss(w + j);
      const float* r = rows[j] + c0;
      a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r), a0);
      a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 8), a1);
      a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 16), a2);
      a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 24), a3);
      a4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 32), a4);
      a5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 40), a5);
      a6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 48), a6);
      a7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(r + 56), a7);
    }
    const __m256 s = _mm256_set1_ps(scale);
    __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int v = 0; v < 8; ++v) _mm256_storeu_ps(out + c0 + 8 * v, _mm256_mul_ps(acc[v], s));
  }
  if (c0 < dh) {
    std::vector<const float*> shifted(n);
    for (int64_t j = 0; j < n; ++j) shifted[j] = rows[j] + c0;
    float* dst = out + c0;
    GemmRowsOut(1, dh - c0, n, w, n, shifted.data(), &scale, &dst);
  }
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
  WeightedRowSum(scores, v_rows, n, dh, scale, out);
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
