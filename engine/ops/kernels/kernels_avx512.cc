// The avx512 copy of the hand-written kernels (kernels_impl.inc over simd_avx512.h), compiled with
// -march=x86-64-v4 (engine/CMakeLists.txt). Only ForIsa() hands out this table, and only when the CPU
// supports the level (engine/base/cpu_features.h).
#include <math.h>

#include <cstdint>

#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/kernels/simd_avx512.h"

namespace reformer::kernels {
namespace avx512 {

constexpr Isa kIsa = Isa::kAvx512;
const KernelTable& Table();

#include "engine/ops/kernels/kernels_impl.inc"

}  // namespace avx512

const KernelTable& Avx512Table() { return avx512::Table(); }

}  // namespace reformer::kernels
