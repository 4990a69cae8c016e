// Dense products of the decoding step (docs/generation.md, "Batch invariance"):
//
//   c[m, n] = post_op(a[m, k] · b[k, n] + bias[n])        (or c += that, with `accumulate`)
//
// Every element is computed by the same operations whatever the number of rows m, the row's place
// in the call, the blocking and the thread count: in float32 the chain of multiply-adds over k in
// order 0, 1, ..., k-1 from zero; bias, activation and accumulation follow in that order. So each
// row of c is bitwise a function of its own row of a: the decoding step runs the rows of all
// active sequences in one call and a sequence's logits do not depend on which other sequences
// share the step. (oneDNN's f32 gemm does not give that: its rows change in the last bits with M,
// see engine/model/forward.h.)
//
// The weights come in the model's compute type (engine/dnnl/matmul.h's PackedWeight, docs/isa.md
// §3), computed as the forward's matmuls compute them:
//   float32:  as above;
//   bfloat16: each row of a rounded to bf16 first, then the same chains over the bf16 weights
//             (widened exactly): float32 accumulation of exact products;
//   int8:     each row of a quantized with its own scale (max|a| / 127), the products summed as
//             exact integers, then acc · (row scale · column scale) + bias, activation,
//             accumulation: the same numbers as the forward's int8 matmul (engine/dnnl/matmul.cc).
// The kernels are the dispatched ones of engine/ops/kernels (AVX-512, AVX2 or portable, chosen at
// start-up): results are bitwise reproducible within one level and agree to rounding between
// levels. b is row-major [k, n] with row stride ldb, as PackedWeight stores it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/dnnl/matmul.h"

namespace reformer {

struct RowGemmCall {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;  // float32 weights (or `packed`)
  int64_t ldb = 0;
  const PackedWeight* packed = nullptr;  // set by With: weights of any compute type
  const float* bias = nullptr;  // [n] or null
  float* c = nullptr;
  int64_t ldc = 0;
  PostOp post_op = PostOp::kNone;
  float post_alpha = 0.f;  // kSwish: x · sigmoid(alpha · x)
  bool accumulate = false;
  // Columns [col_begin, col_end) only (col_end 0: through n): lets a caller split one product
  // among its threads.
  int64_t col_begin = 0, col_end = 0;
  // false: run on the calling thread only; true: large products split their columns among the
  // OpenMP team.
  bool parallel = true;
  // bfloat16 / int8 weights: RowGemmScratchFloats(m, k) floats for the converted rows of a (null:
  // allocated per call).
  float* scratch = nullptr;

  // b from a pre-packed weight (row-major [k, n], any compute type).
  RowGemmCall& With(const PackedWeight& w) {
    packed = &w;
    b = w.data();
    k = w.k();
    n = w.n();
    ldb = w.n();
    return *this;
  }
};

void RowGemm(const RowGemmCall& call);

// Scratch floats RowGemm needs for m rows of k non-float32 inputs.
inline size_t RowGemmScratchFloats(int64_t m, int64_t k) { return static_cast<size_t>(m * k + m); }

// The activation RowGemm applies to one value (scalar reference; tests use it).
float ApplyPostOp(PostOp op, float alpha, float x);

}  // namespace reformer
