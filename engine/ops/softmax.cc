#include "engine/ops/softmax.h"

#include <omp.h>

#include <cmath>

#include "engine/ops/kernels/kernel_table.h"

namespace reformer {

float LogSumExp(const float* x, int64_t n, float* scratch) {
  const kernels::KernelTable& k = kernels::Active();
  const float m = k.max_of(x, n);
  const float sum = k.exp_shift_sum(x, m, scratch, n);
  return m + std::log(sum);
}

void LseSoftmaxRows(float* s, int64_t rows, int64_t cols, int64_t ld, float* lse, float* scratch) {
  const kernels::KernelTable& k = kernels::Active();
#pragma omp parallel for schedule(static) if (rows * cols >= 16384)
  for (int64_t r = 0; r < rows; ++r) {
    float* tmp = scratch + static_cast<int64_t>(omp_get_thread_num()) * cols;
    float* row = s + r * ld;
    const float l = LogSumExp(row, cols, tmp);
    k.exp_shift_sum(row, l, row, cols);
    if (lse) lse[r] = l;
  }
}

}  // namespace reformer
