// What this CPU can run, read once with cpuid/xgetbv, and the instruction-set level the engine's
// hand-written kernels use (docs/isa.md).
//
// The binaries are built for the x86-64-v2 baseline; only the kernel files are compiled with
// higher -march levels, and their code runs only after SelectedIsa() said the CPU (and the OS:
// XSAVE state for ymm/zmm registers) supports it. REFORMER_MAX_ISA=avx512|avx2|portable caps the
// level (to measure the AVX2 path on an AVX-512 machine); it never raises it.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "engine/base/isa.h"

namespace reformer {

struct CpuFeatures {
  bool sse42 = false, popcnt = false;
  bool x86_64_v3 = false;  // AVX, AVX2, FMA, BMI1, BMI2, F16C, LZCNT, MOVBE + OS ymm state
  bool x86_64_v4 = false;  // v3 + AVX-512 F, BW, CD, DQ, VL + OS zmm state
  bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;  // + OS tile state

  // Space-separated names of the features above that are present, e.g. "avx2 avx512 avx512_bf16".
  std::string Summary() const;
};

// This CPU, detected once.
const CpuFeatures& HostCpu();

// Short name: "avx512", "avx2", "portable".
const char* IsaName(Isa isa);

// Highest level `cpu` supports.
Isa BestIsa(const CpuFeatures& cpu);

// The level for `cpu` capped by `max_isa_env` (REFORMER_MAX_ISA's value; null or empty = no
// cap). INVALID_ARGUMENT for a name that is not avx512, avx2 or portable.
absl::Status ResolveIsa(const CpuFeatures& cpu, const char* max_isa_env, Isa* isa);

// The level the engine's kernels use in this process: chosen once, at the first call, from
// HostCpu() and REFORMER_MAX_ISA, and logged. An invalid REFORMER_MAX_ISA falls back to the best
// level; IsaStatus() then holds the error, which ReformerModel::Load returns.
Isa SelectedIsa();
const absl::Status& IsaStatus();

}  // namespace reformer
