// LayerNorm over the feature axis (engine-numerics §5.3): (v - mean) / sqrt(var + eps) * gamma +
// beta, biased variance, float32. Rows are independent; OpenMP-parallel over rows.
#pragma once

#include <cstdint>

namespace reformer {

// dst[r, :] = LN(src[r, :]) for r < rows; `width` features; row strides ld_src / ld_dst.
void LayerNormRows(const float* src, int64_t ld_src, int64_t rows, int64_t width, const float* gamma,
                   const float* beta, float eps, float* dst, int64_t ld_dst);

// Final 2H LayerNorm of concat(a[r, :H], z[r, :H]) into dst[r, :2H] (engine-numerics §5.5).
void LayerNormConcatRows(const float* a, const float* z, int64_t ld_src, int64_t rows, int64_t h,
                         const float* gamma, const float* beta, float eps, float* dst, int64_t ld_dst);

}  // namespace reformer
