// The per-row arithmetic (moments with four accumulators, normalisation) is
// kernels::KernelTable::layer_norm_row, one copy per instruction-set level.
#include "engine/ops/layer_norm.h"

#include "engine/ops/kernels/kernel_table.h"

namespace reformer {

void LayerNormRows(const float* src, int64_t ld_src, int64_t rows, int64_t width, const float* gamma,
                   const float* beta, float eps, float* dst, int64_t ld_dst) {
  const kernels::KernelTable& k = kernels::Active();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    k.layer_norm_row(src + r * ld_src, width, nullptr, 0, gamma, beta, eps, dst + r * ld_dst);
}

void LayerNormConcatRows(const float* a, const float* z, int64_t ld_src, int64_t rows, int64_t h,
                         const float* gamma, const float* beta, float eps, float* dst, int64_t ld_dst) {
  const kernels::KernelTable& k = kernels::Active();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    k.layer_norm_row(a + r * ld_src, h, z + r * ld_src, h, gamma, beta, eps, dst + r * ld_dst);
}

}  // namespace reformer
