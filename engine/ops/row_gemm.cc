#include "engine/ops/row_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

namespace reformer {
namespace {

constexpr int64_t kRows = 6;     // rows per register block
constexpr int64_t kCols = 16;    // columns per register block (two vectors)

// Accumulators of up to kRows rows x 16 columns, each the fma chain over p = 0..k-1. The rows of
// a block share the loads of b; the chain of every element is the same for any R.
template <int R>
inline void Block16(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* acc) {
  __m256 lo[R], hi[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r * lda + p);
      lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(acc + r * kCols, lo[r]);
    _mm256_storeu_ps(acc + r * kCols + 8, hi[r]);
  }
}

// The same chain for fewer than 16 columns (the tail), one element at a time.
void BlockTail(int64_t rows, int64_t cols, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* acc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      float s = 0.f;
      for (int64_t p = 0; p < k; ++p) s = std::fma(a[r * lda + p], b[p * ldb + j], s);
      acc[r * kCols + j] = s;
    }
}

void RowBlock(int64_t rows, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
              float* acc) {
  switch (rows) {
    case 1: return Block16<1>(k, a, lda, b, ldb, acc);
    case 2: return Block16<2>(k, a, lda, b, ldb, acc);
    case 3: return Block16<3>(k, a, lda, b, ldb, acc);
    case 4: return Block16<4>(k, a, lda, b, ldb, acc);
    case 5: return Block16<5>(k, a, lda, b, ldb, acc);
    default: return Block16<6>(k, a, lda, b, ldb, acc);
  }
}

// c = post_op(acc + bias) (+ c), element by element in that order.
void Epilogue(const RowGemmCall& g, int64_t row0, int64_t rows, int64_t col0, int64_t cols, const float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    float* c = g.c + (row0 + r) * g.ldc + col0;
    for (int64_t j = 0; j < cols; ++j) {
      float v = acc[r * kCols + j];
      if (g.bias) v += g.bias[col0 + j];
      if (g.post_op != PostOp::kNone) v = ApplyPostOp(g.post_op, g.post_alpha, v);
      c[j] = g.accumulate ? c[j] + v : v;
    }
  }
}

void ColumnBlock(const RowGemmCall& g, int64_t col0) {
  const int64_t cols = std::min(kCols, g.n - col0);
  alignas(32) float acc[kRows * kCols];
  for (int64_t row0 = 0; row0 < g.m; row0 += kRows) {
    const int64_t rows = std::min(kRows, g.m - row0);
    const float* a = g.a + row0 * g.lda;
    if (cols == kCols) {
      RowBlock(rows, g.k, a, g.lda, g.b + col0, g.ldb, acc);
    } else {
      BlockTail(rows, cols, g.k, a, g.lda, g.b + col0, g.ldb, acc);
    }
    Epilogue(g, row0, rows, col0, cols, acc);
  }
}

}  // namespace

float ApplyPostOp(PostOp op, float alpha, float x) {
  switch (op) {
    case PostOp::kNone: return x;
    case PostOp::kRelu: return x > 0.f ? x : 0.f;
    case PostOp::kGeluErf: return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
    case PostOp::kGeluTanh: {
      const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.f + std::tanh(u));
    }
    case PostOp::kSwish: return x / (1.f + std::exp(-alpha * x));
    case PostOp::kTanh: return std::tanh(x);
    case PostOp::kLogistic: return 1.f / (1.f + std::exp(-x));
    case PostOp::kMish: return x * std::tanh(std::log1p(std::exp(x)));
  }
  return x;
}

void RowGemm(const RowGemmCall& g) {
  if (g.m <= 0 || g.n <= 0) return;
  const int64_t blocks = (g.n + kCols - 1) / kCols;
  // Threads split the columns: an element's chain never depends on the team.
  const bool parallel = g.m * g.n * g.k >= (int64_t{1} << 17) && blocks > 1;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t blk = 0; blk < blocks; ++blk) ColumnBlock(g, blk * kCols);
}

}  // namespace reformer
