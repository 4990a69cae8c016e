// The avx2 copy of the hand-written kernels (kernels_impl.inc over simd_avx2.h), compiled with
// -march=x86-64-v3 (engine/CMakeLists.txt). Only ForIsa() hands out this table, and only when the CPU
// supports the level (engine/base/cpu_features.h).
#include <math.h>

#include <cstdint>

#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/kernels/simd_avx2.h"

namespace reformer::kernels {
namespace avx2 {

constexpr Isa kIsa = Isa::kAvx2;
const KernelTable& Table();

#include "engine/ops/kernels/kernels_impl.inc"

}  // namespace avx2

const KernelTable& Avx2Table() { return avx2::Table(); }

}  // namespace reformer::kernels
