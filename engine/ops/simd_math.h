// Vectorised float32 exp for the attention and softmax loops (AVX2 + FMA; the engine target
// is compiled with -march=x86-64-v3). Relative error <= 2 ulp over the float range; exp(0) == 1
// exactly (SPEC §10.2 relies on it for fully masked rows); inputs below -87.3 give 0.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace reformer {
namespace simd {

inline __m256 Exp8(__m256 x) {
  const __m256 kHi = _mm256_set1_ps(88.3762626647949f);
  const __m256 kLo = _mm256_set1_ps(-87.3365447505531f);
  const __m256 kLog2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 kC1 = _mm256_set1_ps(0.693359375f);
  const __m256 kC2 = _mm256_set1_ps(-2.12194440e-4f);
  const __m256 kP0 = _mm256_set1_ps(1.9875691500E-4f);
  const __m256 kP1 = _mm256_set1_ps(1.3981999507E-3f);
  const __m256 kP2 = _mm256_set1_ps(8.3334519073E-3f);
  const __m256 kP3 = _mm256_set1_ps(4.1665795894E-2f);
  const __m256 kP4 = _mm256_set1_ps(1.6666665459E-1f);
  const __m256 kP5 = _mm256_set1_ps(5.0000001201E-1f);
  const __m256 kOne = _mm256_set1_ps(1.f);
  __m256 under = _mm256_cmp_ps(x, kLo, _CMP_LT_OQ);
  x = _mm256_min_ps(x, kHi);
  x = _mm256_max_ps(x, kLo);
  // n = round(x / ln2); r = x - n ln2 (two-step for accuracy).
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, kLog2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, kC1, x);
  r = _mm256_fnmadd_ps(fx, kC2, r);
  __m256 r2 = _mm256_mul_ps(r, r);
  __m256 y = kP0;
  y = _mm256_fmadd_ps(y, r, kP1);
  y = _mm256_fmadd_ps(y, r, kP2);
  y = _mm256_fmadd_ps(y, r, kP3);
  y = _mm256_fmadd_ps(y, r, kP4);
  y = _mm256_fmadd_ps(y, r, kP5);
  y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, kOne));
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
  __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  y = _mm256_mul_ps(y, pow2);
  return _mm256_andnot_ps(under, y);
}

inline float HorizontalMax(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_max_ps(lo, hi);
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// dst[i] = exp(src[i] - shift) for i < n; returns the sum of dst.
inline float ExpShiftSum(const float* src, float shift, float* dst, int64_t n) {
  __m256 vs = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(src + i), vs));
    _mm256_storeu_ps(dst + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = HorizontalSum(acc);
  if (i < n) {
    alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    alignas(32) float in[8];
    for (int j = 0; j < 8; ++j) in[j] = (i + j < n) ? src[i + j] - shift : -1000.f;
    _mm256_store_ps(tmp, Exp8(_mm256_load_ps(in)));
    for (int64_t j = 0; i + j < n; ++j) {
      dst[i + j] = tmp[j];
      sum += tmp[j];
    }
  }
  return sum;
}

inline float HorizontalMin(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_min_ps(lo, hi);
  lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_min_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

inline float SumOfSquares(const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  float s = HorizontalSum(acc);
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

inline float MaxOf(const float* src, int64_t n) {
  int64_t i = 0;
  float m = -INFINITY;
  if (n >= 8) {
    __m256 vm = _mm256_loadu_ps(src);
    for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(src + i));
    m = HorizontalMax(vm);
  }
  for (; i < n; ++i) m = src[i] > m ? src[i] : m;
  return m;
}

}  // namespace simd
}  // namespace reformer
