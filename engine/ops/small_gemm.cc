// The products themselves are in kernels/kernels_impl.inc, one copy per instruction-set level.
#include "engine/ops/small_gemm.h"

#include "engine/ops/kernels/kernel_table.h"

namespace reformer {

void DotRows(int64_t m, int64_t n, int64_t k, const float* const* a_rows, const float* const* b_rows,
             float* c, int64_t ldc) {
  kernels::Active().dot_rows(m, n, k, a_rows, b_rows, c, ldc);
}

void GemmRowsOut(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* const* b_rows,
                 const float* scale, float* const* c_rows) {
  kernels::Active().gemm_rows_out(m, n, k, a, lda, b_rows, scale, c_rows);
}

void SmallGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc) {
  kernels::Active().small_gemm(m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace reformer
