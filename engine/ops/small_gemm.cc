#include "engine/ops/small_gemm.h"

#include <immintrin.h>

#include "engine/ops/simd_math.h"

namespace reformer {
namespace {

// Four sums of eight lanes each: {Σa0, Σa1, Σa2, Σa3}.
inline __m128 Reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 t0 = _mm256_hadd_ps(a0, a1);
  const __m256 t1 = _mm256_hadd_ps(a2, a3);
  const __m256 t2 = _mm256_hadd_ps(t0, t1);
  return _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1));
}

// The kernels below name every accumulator: GCC keeps arrays of __m256 in memory.

// Rows a0..a2 against rows b0..b3, k a multiple of 8.
inline void Dot3x4(int64_t k, const float* a0, const float* a1, const float* a2, const float* const* b,
                   float* c, int64_t ldc) {
  const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
  __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m256 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
  for (int64_t p = 0; p < k; p += 8) {
    const __m256 x0 = _mm256_loadu_ps(b0 + p), x1 = _mm256_loadu_ps(b1 + p);
    const __m256 x2 = _mm256_loadu_ps(b2 + p), x3 = _mm256_loadu_ps(b3 + p);
    __m256 y = _mm256_loadu_ps(a0 + p);
    c00 = _mm256_fmadd_ps(y, x0, c00);
    c01 = _mm256_fmadd_ps(y, x1, c01);
    c02 = _mm256_fmadd_ps(y, x2, c02);
    c03 = _mm256_fmadd_ps(y, x3, c03);
    y = _mm256_loadu_ps(a1 + p);
    c10 = _mm256_fmadd_ps(y, x0, c10);
    c11 = _mm256_fmadd_ps(y, x1, c11);
    c12 = _mm256_fmadd_ps(y, x2, c12);
    c13 = _mm256_fmadd_ps(y, x3, c13);
    y = _mm256_loadu_ps(a2 + p);
    c20 = _mm256_fmadd_ps(y, x0, c20);
    c21 = _mm256_fmadd_ps(y, x1, c21);
    c22 = _mm256_fmadd_ps(y, x2, c22);
    c23 = _mm256_fmadd_ps(y, x3, c23);
  }
  _mm_storeu_ps(c, Reduce4(c00, c01, c02, c03));
  _mm_storeu_ps(c + ldc, Reduce4(c10, c11, c12, c13));
  _mm_storeu_ps(c + 2 * ldc, Reduce4(c20, c21, c22, c23));
}

// Row a0 against rows b0..b3, k a multiple of 8.
inline void Dot1x4(int64_t k, const float* a0, const float* const* b, float* c) {
  const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
  __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
  for (int64_t p = 0; p < k; p += 8) {
    const __m256 y = _mm256_loadu_ps(a0 + p);
    c0 = _mm256_fmadd_ps(y, _mm256_loadu_ps(b0 + p), c0);
    c1 = _mm256_fmadd_ps(y, _mm256_loadu_ps(b1 + p), c1);
    c2 = _mm256_fmadd_ps(y, _mm256_loadu_ps(b2 + p), c2);
    c3 = _mm256_fmadd_ps(y, _mm256_loadu_ps(b3 + p), c3);
  }
  _mm_storeu_ps(c, Reduce4(c0, c1, c2, c3));
}

// Any k: one pair at a time.
inline float DotOne(int64_t k, const float* a, const float* b) {
  __m256 acc = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + p), _mm256_loadu_ps(b + p), acc);
  float s = simd::HorizontalSum(acc);
  for (; p < k; ++p) s += a[p] * b[p];
  return s;
}

// B and C rows given by pointer arrays (attention) or by a base and a row stride.
struct PointerRows {
  const float* const* rows;
  const float* operator()(int64_t i) const { return rows[i]; }
};
struct MutablePointerRows {
  float* const* rows;
  float* operator()(int64_t i) const { return rows[i]; }
};
struct StridedRows {
  const float* base;
  int64_t ld;
  const float* operator()(int64_t i) const { return base + i * ld; }
};
struct MutableStridedRows {
  float* base;
  int64_t ld;
  float* operator()(int64_t i) const { return base + i * ld; }
};

// Six rows of A times 16 columns [col, col + 16) of the B rows; output row i is multiplied by
// scale[i] when `scale` is not null.
template <class BRows, class CRows>
inline void Rows6x16(int64_t k, const float* a, int64_t lda, BRows b, int64_t col, const float* scale,
                     CRows c) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda,
              *a5 = a + 5 * lda;
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b(p) + col;
    const __m256 x0 = _mm256_loadu_ps(bp), x1 = _mm256_loadu_ps(bp + 8);
    __m256 y = _mm256_broadcast_ss(a0 + p);
    c00 = _mm256_fmadd_ps(y, x0, c00);
    c01 = _mm256_fmadd_ps(y, x1, c01);
    y = _mm256_broadcast_ss(a1 + p);
    c10 = _mm256_fmadd_ps(y, x0, c10);
    c11 = _mm256_fmadd_ps(y, x1, c11);
    y = _mm256_broadcast_ss(a2 + p);
    c20 = _mm256_fmadd_ps(y, x0, c20);
    c21 = _mm256_fmadd_ps(y, x1, c21);
    y = _mm256_broadcast_ss(a3 + p);
    c30 = _mm256_fmadd_ps(y, x0, c30);
    c31 = _mm256_fmadd_ps(y, x1, c31);
    y = _mm256_broadcast_ss(a4 + p);
    c40 = _mm256_fmadd_ps(y, x0, c40);
    c41 = _mm256_fmadd_ps(y, x1, c41);
    y = _mm256_broadcast_ss(a5 + p);
    c50 = _mm256_fmadd_ps(y, x0, c50);
    c51 = _mm256_fmadd_ps(y, x1, c51);
  }
  auto store = [&](int i, __m256 lo, __m256 hi) {
    if (scale != nullptr) {
      const __m256 s = _mm256_set1_ps(scale[i]);
      lo = _mm256_mul_ps(lo, s);
      hi = _mm256_mul_ps(hi, s);
    }
    _mm256_storeu_ps(c(i) + col, lo);
    _mm256_storeu_ps(c(i) + col + 8, hi);
  };
  store(0, c00, c01);
  store(1, c10, c11);
  store(2, c20, c21);
  store(3, c30, c31);
  store(4, c40, c41);
  store(5, c50, c51);
}

// One row of A times columns [col, col + 8) of the B rows.
template <class BRows>
inline void Row1x8(int64_t k, const float* a, BRows b, int64_t col, const float* scale, float* c) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  int64_t p = 0;
  for (; p + 2 <= k; p += 2) {
    acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + p), _mm256_loadu_ps(b(p) + col), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + p + 1), _mm256_loadu_ps(b(p + 1) + col), acc1);
  }
  for (; p < k; ++p) acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + p), _mm256_loadu_ps(b(p) + col), acc0);
  __m256 r = _mm256_add_ps(acc0, acc1);
  if (scale != nullptr) r = _mm256_mul_ps(r, _mm256_set1_ps(*scale));
  _mm256_storeu_ps(c + col, r);
}

// C rows [m, n) = (scale ·) A [m, k] · B rows [k, n).
template <class BRows, class CRows>
void RowsGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, BRows b, const float* scale,
              CRows c) {
  const int64_t n16 = n / 16 * 16, n8 = n / 8 * 8;
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) {
    auto rows = [&](int64_t r) { return c(i + r); };
    for (int64_t col = 0; col < n16; col += 16)
      Rows6x16(k, a + i * lda, lda, b, col, scale ? scale + i : nullptr, rows);
  }
  for (; i < m; ++i)
    for (int64_t col = 0; col < n16; col += 8)
      Row1x8(k, a + i * lda, b, col, scale ? scale + i : nullptr, c(i));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t col = n16; col < n8; col += 8) Row1x8(k, a + r * lda, b, col, scale ? scale + r : nullptr, c(r));
    for (int64_t col = n8; col < n; ++col) {
      float s = 0.f;
      for (int64_t p = 0; p < k; ++p) s += a[r * lda + p] * b(p)[col];
      c(r)[col] = scale ? s * scale[r] : s;
    }
  }
}

}  // namespace

void DotRows(int64_t m, int64_t n, int64_t k, const float* const* a_rows, const float* const* b_rows,
             float* c, int64_t ldc) {
  const int64_t n4 = k % 8 == 0 ? n / 4 * 4 : 0;
  int64_t i = 0;
  for (; i + 3 <= m; i += 3)
    for (int64_t j = 0; j < n4; j += 4)
      Dot3x4(k, a_rows[i], a_rows[i + 1], a_rows[i + 2], b_rows + j, c + i * ldc + j, ldc);
  for (; i < m; ++i)
    for (int64_t j = 0; j < n4; j += 4) Dot1x4(k, a_rows[i], b_rows + j, c + i * ldc + j);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = n4; j < n; ++j) c[r * ldc + j] = DotOne(k, a_rows[r], b_rows[j]);
}

void GemmRowsOut(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* const* b_rows,
                 const float* scale, float* const* c_rows) {
  RowsGemm(m, n, k, a, lda, PointerRows{b_rows}, scale, MutablePointerRows{c_rows});
}

void SmallGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc) {
  RowsGemm(m, n, k, a, lda, StridedRows{b, ldb}, nullptr, MutableStridedRows{c, ldc});
}

}  // namespace reformer
