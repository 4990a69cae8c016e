// Single-threaded kernels for the attention blocks' small products (one OpenMP thread per
// block, so no oneDNN call and no thread barrier per block), in the instruction-set level chosen
// at start-up (ops/kernels/kernel_table.h).
//
// The attention kernels address rows through pointer arrays, so that LSH attention reads the
// sorted queries, keys and values where they lie and writes each output row where it belongs:
// no gather or scatter copies.
#pragma once

#include <cstdint>

namespace reformer {

// C[M, N] = A[M, K] · B[K, N], all row-major with leading dimensions.
void SmallGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc);

// C[i][j] = Σ_p a_rows[i][p] · b_rows[j][p] for i < m, j < n (C row-major, leading dimension ldc).
void DotRows(int64_t m, int64_t n, int64_t k, const float* const* a_rows, const float* const* b_rows,
             float* c, int64_t ldc);

// c_rows[i][0..n) = scale[i] · Σ_p A[i][p] · b_rows[p][0..n) for i < m (A row-major, lda).
void GemmRowsOut(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* const* b_rows,
                 const float* scale, float* const* c_rows);

}  // namespace reformer
