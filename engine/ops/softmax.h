// Row softmax through a log-sum-exp, exactly in engine-numerics §6.2's float32 form:
//   m = max(s), lse = m + log(sum(exp(s - m))), p = exp(s - lse).
#pragma once

#include <cstdint>

namespace reformer {

// In place over rows x cols (row stride ld). Writes each row's lse to lse[r] when lse != nullptr.
// `scratch` holds at least omp_get_max_threads() * cols floats.
void LseSoftmaxRows(float* s, int64_t rows, int64_t cols, int64_t ld, float* lse, float* scratch);

// log(sum(exp(x))) of one row (same max-subtracted form).
float LogSumExp(const float* x, int64_t n, float* scratch);

}  // namespace reformer
