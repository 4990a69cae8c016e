#include "engine/ops/layer_norm.h"

#include <immintrin.h>

#include <cmath>

#include "engine/ops/simd_math.h"

namespace reformer {
namespace {

// Sum and sum of squared deviations of two segments (so the concat case needs no copy). Four
// independent accumulators in the wide loops keep the adds from waiting on each other.
inline void Moments(const float* x0, int64_t n0, const float* x1, int64_t n1, float* mean, float* var) {
  __m256 acc = _mm256_setzero_ps();
  float tail = 0.f;
  auto sum_seg = [&](const float* x, int64_t n) {
    int64_t i = 0;
    __m256 s1 = _mm256_setzero_ps(), s2 = s1, s3 = s1;
    for (; i + 32 <= n; i += 32) {
      acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
      s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + i + 16));
      s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + i + 24));
    }
    acc = _mm256_add_ps(_mm256_add_ps(acc, s1), _mm256_add_ps(s2, s3));
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    for (; i < n; ++i) tail += x[i];
  };
  sum_seg(x0, n0);
  if (n1) sum_seg(x1, n1);
  const int64_t n = n0 + n1;
  const float m = (simd::HorizontalSum(acc) + tail) / static_cast<float>(n);
  __m256 vm = _mm256_set1_ps(m);
  __m256 acc2 = _mm256_setzero_ps();
  float tail2 = 0.f;
  auto var_seg = [&](const float* x, int64_t k) {
    int64_t i = 0;
    __m256 v1 = _mm256_setzero_ps(), v2 = v1, v3 = v1;
    for (; i + 32 <= k; i += 32) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
      const __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 16), vm);
      const __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 24), vm);
      acc2 = _mm256_fmadd_ps(d0, d0, acc2);
      v1 = _mm256_fmadd_ps(d1, d1, v1);
      v2 = _mm256_fmadd_ps(d2, d2, v2);
      v3 = _mm256_fmadd_ps(d3, d3, v3);
    }
    acc2 = _mm256_add_ps(_mm256_add_ps(acc2, v1), _mm256_add_ps(v2, v3));
    for (; i + 8 <= k; i += 8) {
      __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
      acc2 = _mm256_fmadd_ps(d, d, acc2);
    }
    for (; i < k; ++i) tail2 += (x[i] - m) * (x[i] - m);
  };
  var_seg(x0, n0);
  if (n1) var_seg(x1, n1);
  *mean = m;
  *var = (simd::HorizontalSum(acc2) + tail2) / static_cast<float>(n);
}

inline void Normalize(const float* x, int64_t n, float mean, float inv, const float* g, const float* b,
                      float* y) {
  __m256 vm = _mm256_set1_ps(mean), vi = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vi);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) y[i] = (x[i] - mean) * inv * g[i] + b[i];
}

}  // namespace

void LayerNormRows(const float* src, int64_t ld_src, int64_t rows, int64_t width, const float* gamma,
                   const float* beta, float eps, float* dst, int64_t ld_dst) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * ld_src;
    float mean, var;
    Moments(x, width, nullptr, 0, &mean, &var);
    const float inv = 1.f / std::sqrt(var + eps);
    Normalize(x, width, mean, inv, gamma, beta, dst + r * ld_dst);
  }
}

void LayerNormConcatRows(const float* a, const float* z, int64_t ld_src, int64_t rows, int64_t h,
                         const float* gamma, const float* beta, float eps, float* dst, int64_t ld_dst) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xa = a + r * ld_src;
    const float* xz = z + r * ld_src;
    float mean, var;
    Moments(xa, h, xz, h, &mean, &var);
    const float inv = 1.f / std::sqrt(var + eps);
    float* y = dst + r * ld_dst;
    Normalize(xa, h, mean, inv, gamma, beta, y);
    Normalize(xz, h, mean, inv, gamma + h, beta + h, y + h);
  }
}

}  // namespace reformer
