#include "engine/base/compute_type.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace reformer {

const char* ComputeTypeName(ComputeType type) {
  switch (type) {
    case ComputeType::kBFloat16: return "bfloat16";
    case ComputeType::kInt8: return "int8";
    case ComputeType::kFloat32: break;
  }
  return "float32";
}

absl::StatusOr<ComputeTypeRequest> ParseComputeType(absl::string_view name) {
  const std::string v = absl::AsciiStrToLower(name);
  ComputeTypeRequest r;
  if (v == "float32" || v == "f32") return r;
  if (v == "bfloat16" || v == "bf16") {
    r.type = ComputeType::kBFloat16;
    return r;
  }
  if (v == "int8") {
    r.type = ComputeType::kInt8;
    return r;
  }
  if (v == "auto") {
    r.automatic = true;
    return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("compute type '", name, "': expected float32, bfloat16, int8 or auto"));
}

absl::Status CpuSupports(const CpuFeatures& cpu, ComputeType type) {
  if (type == ComputeType::kBFloat16 && !cpu.avx512_bf16)
    return absl::FailedPreconditionError(absl::StrCat(
        "compute type bfloat16 needs the AVX512_BF16 instruction set, which this CPU lacks (it has: ",
        cpu.Summary(), ")"));
  if (type == ComputeType::kInt8 && !cpu.avx512_vnni && !cpu.avx_vnni)
    return absl::FailedPreconditionError(absl::StrCat(
        "compute type int8 needs the AVX512_VNNI or AVX_VNNI instruction set, which this CPU lacks (it has: ",
        cpu.Summary(), ")"));
  return absl::OkStatus();
}

}  // namespace reformer
