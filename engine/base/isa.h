// Instruction-set levels of the engine's hand-written kernels (engine/base/cpu_features.h says
// which one runs). No includes: the kernel files compiled with higher -march levels include it.
#pragma once

namespace reformer {

// Lowest first. kPortable is the x86-64-v2 baseline (SSE4.2, 4 float lanes); kAvx2 needs
// x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE); kAvx512 needs x86-64-v4 (AVX-512
// F/BW/CD/DQ/VL on top of v3).
enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

}  // namespace reformer
