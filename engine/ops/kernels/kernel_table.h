// The engine's hand-written kernels, one table per instruction-set level (kernels_impl.inc is
// compiled once per level: kernels_avx512.cc, kernels_avx2.cc, kernels_portable.cc). The table
// of SelectedIsa() (engine/base/cpu_features.h) is chosen once per process; tests and
// benchmarks can also call a lower level's table directly to compare them in one process.
//
// Every kernel is deterministic: the same inputs give the same bits on every call of one
// table. Different tables sum in different orders (results agree to rounding).
#pragma once

#include <cstdint>

#include "engine/base/isa.h"

namespace reformer::kernels {

// Element type of row_gemm's weights (engine/dnnl/matmul.h's PackedWeight in each compute type).
enum class WeightType : int32_t { kF32 = 0, kBf16 = 1, kS8 = 2 };

// Activations of row_gemm: engine/dnnl/matmul.h's PostOp, same values (engine/ops/row_gemm.cc
// checks that they agree).
enum class RowPostOp : int32_t { kNone = 0, kRelu, kGeluErf, kGeluTanh, kSwish, kTanh, kLogistic, kMish };

// c[i][j] for i < m, j < n (engine/ops/row_gemm.h):
//   kF32, kBf16: s = Σ_p a[i][p] · b[p][j], one multiply-add chain over p = 0..k-1 from zero
//                (for kBf16 the rows of a hold bf16-rounded values and b is widened exactly);
//   kS8:         s = float(Σ_p a[i][p] · b[p][j]) · (row_scale[i] · col_scale[j]), the sum an
//                exact integer (a holds the quantized row as floats);
// then v = s + bias[j] (when bias), v = post_op(v), c = accumulate ? c + v : v. Whatever m, the
// row's place among them and the blocking, an element is computed by the same operations, so a
// row of c is bitwise a function of its own row of a.
struct RowGemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;  // [k][ldb] of b_type
  int64_t ldb = 0;
  WeightType b_type = WeightType::kF32;
  const float* row_scale = nullptr;  // kS8: [m]
  const float* col_scale = nullptr;  // kS8: [n]
  const float* bias = nullptr;       // [n] or null
  float* c = nullptr;
  int64_t ldc = 0;
  RowPostOp post_op = RowPostOp::kNone;
  float post_alpha = 0.f;  // kSwish: x · sigmoid(alpha · x)
  bool accumulate = false;
};

struct KernelTable {
  Isa isa;
  // Attention scores: true = transpose the block's keys once (pack_transposed) and use the
  // broadcast product gemm_arows; false = dot_rows (horizontal sums). Chosen per level by
  // tools/bench/kernel_bench (docs/results/engine-perf2.md): packing wins with AVX2 / AVX-512,
  // dot_rows with 4-lane SSE.
  bool scores_via_packed_keys;
  // ---- small_gemm.h (semantics documented there) ----
  void (*dot_rows)(int64_t m, int64_t n, int64_t k, const float* const* a_rows, const float* const* b_rows,
                   float* c, int64_t ldc);
  void (*gemm_rows_out)(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                        const float* const* b_rows, const float* scale, float* const* c_rows);
  void (*small_gemm)(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                     float* c, int64_t ldc);
  // C[i][0..n) = Σ_p a_rows[i][p] · bt[p][0..n) (Bᵀ packed row-major [k, n], leading dimension ldb).
  void (*gemm_arows)(int64_t m, int64_t n, int64_t k, const float* const* a_rows, const float* bt, int64_t ldb,
                     float* c, int64_t ldc);
  // bt[p][j] = (b_rows[j][p] · row_mul[j]) / div for j < n, p < k (leading dimension ldb), each
  // element rounded as scale_div rounds it (row_mul null = 1: b_rows[j][p] / div).
  void (*pack_transposed)(int64_t n, int64_t k, const float* const* b_rows, const float* row_mul, float div,
                          float* bt, int64_t ldb);

  // ---- softmax / log-sum-exp (engine-numerics §6.2 float32 form) ----
  float (*max_of)(const float* x, int64_t n);
  // dst[i] = exp(src[i] - shift) (dst may be src); returns Σ dst.
  float (*exp_shift_sum)(const float* src, float shift, float* dst, int64_t n);
  // One attention score row: mask (padding / causal: MASK; own position when self_mask: SELF),
  // then exp(s - max) in place; *lse = max + log Σ, *scale = exp(max - lse) (ops/attention.cc).
  void (*masked_softmax_row)(float* s, int64_t n, int32_t qp, const int32_t* kpos, const int32_t* kvalid,
                             bool causal, bool self_mask, float* lse, float* scale);

  // ---- LayerNorm (engine-numerics §5.3) of the concatenation x0[0..n0) ++ x1[0..n1) (n1 may be 0) ----
  void (*layer_norm_row)(const float* x0, int64_t n0, const float* x1, int64_t n1, const float* gamma,
                         const float* beta, float eps, float* y);

  // ---- LSH hashing (engine-numerics §7.3, §9.4): argmax over concat(x, -x), ties to the lowest index ----
  int64_t (*argmax_signed)(const float* x, int64_t half);

  // ---- attention helpers ----
  float (*sum_of_squares)(const float* x, int64_t n);
  // y[i] = (x[i] * mul) / div.
  void (*scale_div)(const float* x, int64_t n, float mul, float div, float* y);
  // y[i] += a * x[i].
  void (*axpy)(int64_t n, float a, const float* x, float* y);

  // ---- the decoding step (engine/ops/row_gemm.h, engine/ops/cached_attention.h) ----
  void (*row_gemm)(const RowGemmArgs& args);
  // out[j] = (Σ_i w[i] · rows[i][j], a multiply-add chain over i in order from zero) · scale,
  // j < n.
  void (*weighted_row_sum)(const float* w, const float* const* rows, int64_t count, int64_t n, float scale,
                           float* out);

  // ---- compute types (engine/dnnl/matmul.cc; docs/isa.md) ----
  // y[i] = x[i] rounded to bfloat16 (nearest, ties to even), as bits.
  void (*to_bf16)(const float* x, int64_t n, uint16_t* y);
  // q[i] = round(x[i] / s) in [-127, 127] with s = max|x| / 127 (0 for an all-zero row); returns s.
  float (*quantize_s8)(const float* x, int64_t n, int8_t* q);
  // v = acc[j] · (row_scale · col_scale[j]) (+ bias[j]) (ReLU when relu); y[j] = v, or y[j] += v
  // when accumulate.
  void (*dequantize_row)(const int32_t* acc, int64_t n, float row_scale, const float* col_scale,
                         const float* bias, bool relu, bool accumulate, float* y);
};

// The table of SelectedIsa().
const KernelTable& Active();

// The table of `isa`; null when this CPU cannot run it.
const KernelTable* ForIsa(Isa isa);

// Per-level tables (defined in kernels_<level>.cc; call only through ForIsa/Active).
const KernelTable& Avx512Table();
const KernelTable& Avx2Table();
const KernelTable& PortableTable();

}  // namespace reformer::kernels
