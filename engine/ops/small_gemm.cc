#include "engine/ops/small_gemm.h"

#include <immintrin.h>

namespace reformer {
namespace {

// 4 rows x 16 columns register block.
inline void Kernel4x16(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                       int64_t ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
    __m256 a0 = _mm256_broadcast_ss(a + p);
    c00 = _mm256_fmadd_ps(a0, b0, c00);
    c01 = _mm256_fmadd_ps(a0, b1, c01);
    __m256 a1 = _mm256_broadcast_ss(a + lda + p);
    c10 = _mm256_fmadd_ps(a1, b0, c10);
    c11 = _mm256_fmadd_ps(a1, b1, c11);
    __m256 a2 = _mm256_broadcast_ss(a + 2 * lda + p);
    c20 = _mm256_fmadd_ps(a2, b0, c20);
    c21 = _mm256_fmadd_ps(a2, b1, c21);
    __m256 a3 = _mm256_broadcast_ss(a + 3 * lda + p);
    c30 = _mm256_fmadd_ps(a3, b0, c30);
    c31 = _mm256_fmadd_ps(a3, b1, c31);
  }
  _mm256_storeu_ps(c, c00);
  _mm256_storeu_ps(c + 8, c01);
  _mm256_storeu_ps(c + ldc, c10);
  _mm256_storeu_ps(c + ldc + 8, c11);
  _mm256_storeu_ps(c + 2 * ldc, c20);
  _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  _mm256_storeu_ps(c + 3 * ldc, c30);
  _mm256_storeu_ps(c + 3 * ldc + 8, c31);
}

inline void Kernel1x16(int64_t k, const float* a, const float* b, int64_t ldb, float* c) {
  __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m256 a0 = _mm256_broadcast_ss(a + p);
    c0 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + p * ldb), c0);
    c1 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + p * ldb + 8), c1);
  }
  _mm256_storeu_ps(c, c0);
  _mm256_storeu_ps(c + 8, c1);
}

}  // namespace

void SmallGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc) {
  const int64_t n16 = n / 16 * 16;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4)
    for (int64_t j = 0; j < n16; j += 16) Kernel4x16(k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc);
  for (; i < m; ++i)
    for (int64_t j = 0; j < n16; j += 16) Kernel1x16(k, a + i * lda, b + j, ldb, c + i * ldc + j);
  if (n16 < n) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = n16; j < n; ++j) {
        float s = 0.f;
        for (int64_t p = 0; p < k; ++p) s += a[r * lda + p] * b[p * ldb + j];
        c[r * ldc + j] = s;
      }
  }
}

}  // namespace reformer
