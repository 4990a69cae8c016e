// Single-threaded AVX2/FMA kernel for the attention blocks' small products (one OpenMP thread
// per block, so no oneDNN call and no thread barrier per block):
//   C[M, N] = A[M, K] · B[K, N], all row-major with leading dimensions.
#pragma once

#include <cstdint>

namespace reformer {

void SmallGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc);

}  // namespace reformer
