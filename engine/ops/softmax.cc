#include "engine/ops/softmax.h"

#include <omp.h>

#include <cmath>

#include "engine/ops/simd_math.h"

namespace reformer {

float LogSumExp(const float* x, int64_t n, float* scratch) {
  const float m = simd::MaxOf(x, n);
  const float sum = simd::ExpShiftSum(x, m, scratch, n);
  return m + std::log(sum);
}

void LseSoftmaxRows(float* s, int64_t rows, int64_t cols, int64_t ld, float* lse, float* scratch) {
#pragma omp parallel for schedule(static) if (rows * cols >= 16384)
  for (int64_t r = 0; r < rows; ++r) {
    float* tmp = scratch + static_cast<int64_t>(omp_get_thread_num()) * cols;
    float* row = s + r * ld;
    const float l = LogSumExp(row, cols, tmp);
    simd::ExpShiftSum(row, l, row, cols);
    if (lse) lse[r] = l;
  }
}

}  // namespace reformer
