// The portable copy of the hand-written kernels (kernels_impl.inc over simd_portable.h), compiled with
// the engine's x86-64-v2 baseline (engine/CMakeLists.txt). Only ForIsa() hands out this table, and only when the CPU
// supports the level (engine/base/cpu_features.h).
#include <math.h>

#include <cstdint>

#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/kernels/simd_portable.h"

namespace reformer::kernels {
namespace portable {

constexpr Isa kIsa = Isa::kPortable;
const KernelTable& Table();

#include "engine/ops/kernels/kernels_impl.inc"

}  // namespace portable

const KernelTable& PortableTable() { return portable::Table(); }

}  // namespace reformer::kernels
