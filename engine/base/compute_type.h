// Compute types of the dense matmuls (docs/isa.md): float32 (exact, the default), bfloat16
// (weights pre-packed in bf16, activations rounded to bf16, f32 accumulation) and int8 (weights
// s8 with one scale per output channel, activations quantized per row at run time, s32
// accumulation). LayerNorm, softmax/log-sum-exp, attention and the LSH hashing decision stay
// float32 in every type.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/base/cpu_features.h"

namespace reformer {

enum class ComputeType { kFloat32, kBFloat16, kInt8 };

// "float32", "bfloat16", "int8".
const char* ComputeTypeName(ComputeType type);

// A requested type: one of the above, or auto (the fastest this CPU runs within the accuracy
// bounds of docs/isa.md).
struct ComputeTypeRequest {
  bool automatic = false;
  ComputeType type = ComputeType::kFloat32;
};

// Parses float32|bfloat16|int8|auto (also f32, bf16). INVALID_ARGUMENT names the choices.
absl::StatusOr<ComputeTypeRequest> ParseComputeType(absl::string_view name);

// OK when `cpu` has the instructions `type` needs (bfloat16: AVX512_BF16; int8: AVX512_VNNI or
// AVX_VNNI); else FAILED_PRECONDITION naming the missing instruction set. (Whether oneDNN, which
// ONEDNN_MAX_CPU_ISA may cap, can use them is checked where the weights are packed.)
absl::Status CpuSupports(const CpuFeatures& cpu, ComputeType type);

}  // namespace reformer
