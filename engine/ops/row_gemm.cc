#include "engine/ops/row_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace reformer {
namespace {

constexpr int64_t kRows = 6;     // rows per register block, at most
constexpr int64_t kPanel = 64;   // columns per task: every block width below divides it

// R rows x 8V columns of sums in registers, each the fma chain over p = 0..k-1 from zero. The rows
// share the loads of b; whatever R and V, an element's chain is the same, so are its bits.
template <int R, int V>
inline void Block(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* acc, int64_t ld_acc) {
  __m256 s[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) s[r][v] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r * lda + p);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) s[r][v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 8 * v), s[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(acc + r * ld_acc + 8 * v, s[r][v]);
}

// Fewer than 8 columns: the same chain, one element at a time.
void BlockTail(int64_t rows, int64_t cols, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* acc, int64_t ld_acc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      float s = 0.f;
      for (int64_t p = 0; p < k; ++p) s = std::fma(a[r * lda + p], b[p * ldb + j], s);
      acc[r * ld_acc + j] = s;
    }
}

// `cols` (<= kPanel) columns of `rows` (<= kRows) rows: wide blocks for few rows (b is read once
// per block, in longer runs), narrow ones for many.
template <int R, int V>
void PanelRows(int64_t cols, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* acc) {
  int64_t c = 0;
  for (; c + 8 * V <= cols; c += 8 * V) Block<R, V>(k, a, lda, b + c, ldb, acc + c, kPanel);
  for (; c + 8 <= cols; c += 8) Block<R, 1>(k, a, lda, b + c, ldb, acc + c, kPanel);
  if (c < cols) BlockTail(R, cols - c, k, a, lda, b + c, ldb, acc + c, kPanel);
}

void Panel(int64_t rows, int64_t cols, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
           float* acc) {
  switch (rows) {
    case 1: return PanelRows<1, 8>(cols, k, a, lda, b, ldb, acc);
    case 2: return PanelRows<2, 4>(cols, k, a, lda, b, ldb, acc);
    case 3: return PanelRows<3, 4>(cols, k, a, lda, b, ldb, acc);
    case 4: return PanelRows<4, 2>(cols, k, a, lda, b, ldb, acc);
    case 5: return PanelRows<5, 2>(cols, k, a, lda, b, ldb, acc);
    default: return PanelRows<6, 2>(cols, k, a, lda, b, ldb, acc);
  }
}

// c = post_op(acc + bias) (+ c), element by element in that order.
void Epilogue(const RowGemmCall& g, int64_t row0, int64_t rows, int64_t col0, int64_t cols, const float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    float* c = g.c + (row0 + r) * g.ldc + col0;
    for (int64_t j = 0; j < cols; ++j) {
      float v = acc[r * kPanel + j];
      if (g.bias) v += g.bias[col0 + j];
      if (g.post_op != PostOp::kNone) v = ApplyPostOp(g.post_op, g.post_alpha, v);
      c[j] = g.accumulate ? c[j] + v : v;
    }
  }
}

// From this many rows on, a panel of a wide b (rows of a page or more) is copied to contiguous
// memory first: the row blocks then read it at stride kPanel instead of ldb, not one page per k
// step (TLB misses).
constexpr int64_t kPackRows = 12, kPackLd = 1024;

void ColumnPanel(const RowGemmCall& g, int64_t col0, std::vector<float>* pack) {
  const int64_t cols = std::min(kPanel, g.n - col0);
  const float* b = g.b + col0;
  int64_t ldb = g.ldb;
  if (g.m >= kPackRows && g.ldb >= kPackLd) {
    pack->resize(g.k * kPanel);
    for (int64_t p = 0; p < g.k; ++p) std::memcpy(pack->data() + p * kPanel, b + p * g.ldb, sizeof(float) * cols);
    b = pack->data();
    ldb = kPanel;
  }
  alignas(32) float acc[kRows * kPanel];
  for (int64_t row0 = 0; row0 < g.m; row0 += kRows) {
    const int64_t rows = std::min(kRows, g.m - row0);
    Panel(rows, cols, g.k, g.a + row0 * g.lda, g.lda, b, ldb, acc);
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
  const int64_t panels = (g.n + kPanel - 1) / kPanel;
  // Threads split the columns: an element's chain never depends on the team. Below ~1M
  // multiply-adds (tens of microseconds) waking the team costs more than it saves.
  const bool parallel = g.m * g.n * g.k >= (int64_t{1} << 20) && panels > 1;
#pragma omp parallel if (parallel)
  {
    std::vector<float> pack;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) ColumnPanel(g, p * kPanel, &pack);
  }
}

}  // namespace reformer
