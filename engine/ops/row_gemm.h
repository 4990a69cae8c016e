// Dense products of the decoding step (docs/generation.md, "Batch invariance"):
//
//   c[m, n] = post_op(a[m, k] · b[k, n] + bias[n])        (or c += that, with `accumulate`)
//
// Every element is the same chain of fused multiply-adds over k in order 0, 1, ..., k-1, started
// from zero, whatever the number of rows m, the row's place in the call and the thread count;
// bias, activation and accumulation follow in that order. So each row of c is bitwise a function
// of its own row of a: the decoding step runs the rows of all active sequences in one call and a
// sequence's logits do not depend on which other sequences share the step. (oneDNN's f32 gemm
// does not give that: its rows change in the last bits with M, see engine/model/forward.h.)
//
// AVX2 + FMA (the engine target is x86-64-v3). b is row-major [k, n] with row stride ldb, as
// engine/dnnl/matmul.h's PackedWeight stores it. OpenMP-parallel over column blocks.
#pragma once

#include <cstdint>

#include "engine/dnnl/matmul.h"

namespace reformer {

struct RowGemmCall {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  const float* bias = nullptr;  // [n] or null
  float* c = nullptr;
  int64_t ldc = 0;
  PostOp post_op = PostOp::kNone;
  float post_alpha = 0.f;  // kSwish: x · sigmoid(alpha · x)
  bool accumulate = false;

  // b from a pre-packed weight (plain row-major [k, n]).
  RowGemmCall& With(const PackedWeight& w) {
    b = w.data();
    k = w.k();
    n = w.n();
    ldb = w.n();
    return *this;
  }
};

void RowGemm(const RowGemmCall& call);

// The activation RowGemm applies to one value (scalar reference; tests use it).
float ApplyPostOp(PostOp op, float alpha, float x);

}  // namespace reformer
