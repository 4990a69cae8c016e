#include "engine/base/cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/base/logging.h"

namespace reformer {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs Cpuid(unsigned leaf, unsigned sub) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) return Regs();
  return r;
}

bool Bit(unsigned reg, int bit) { return (reg >> bit) & 1u; }

// XCR0: which register states the OS saves (only valid when OSXSAVE is set).
uint64_t Xcr0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuFeatures Detect() {
  CpuFeatures f;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  const Regs l1 = Cpuid(1, 0);
  const Regs l7 = max_leaf >= 7 ? Cpuid(7, 0) : Regs();
  const Regs l7s1 = (max_leaf >= 7 && l7.a >= 1) ? Cpuid(7, 1) : Regs();
  const unsigned max_ext_leaf = __get_cpuid_max(0x80000000u, nullptr);
  const Regs e1 = max_ext_leaf >= 0x80000001u ? Cpuid(0x80000001u, 0) : Regs();
  f.sse42 = Bit(l1.c, 20);
  f.popcnt = Bit(l1.c, 23);
  const bool osxsave = Bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? Xcr0() : 0;
  const bool ymm_state = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;          // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool tile_state = (xcr0 & 0x60000) == 0x60000;   // XTILECFG + XTILEDATA
  const bool avx = Bit(l1.c, 28), fma = Bit(l1.c, 12), f16c = Bit(l1.c, 29), movbe = Bit(l1.c, 22);
  const bool avx2 = Bit(l7.b, 5), bmi1 = Bit(l7.b, 3), bmi2 = Bit(l7.b, 8), lzcnt = Bit(e1.c, 5);
  f.x86_64_v3 = ymm_state && avx && avx2 && fma && f16c && movbe && bmi1 && bmi2 && lzcnt;
  const bool avx512 = Bit(l7.b, 16) && Bit(l7.b, 17) && Bit(l7.b, 28) && Bit(l7.b, 30) && Bit(l7.b, 31);
  f.x86_64_v4 = f.x86_64_v3 && zmm_state && avx512;
  f.avx512_vnni = f.x86_64_v4 && Bit(l7.c, 11);
  f.avx512_bf16 = f.x86_64_v4 && Bit(l7s1.a, 5);
  f.avx_vnni = f.x86_64_v3 && Bit(l7s1.a, 4);
  f.amx_tile = tile_state && Bit(l7.d, 24);
  f.amx_bf16 = f.amx_tile && Bit(l7.d, 22);
  f.amx_int8 = f.amx_tile && Bit(l7.d, 25);
  return f;
}

struct Selection {
  Isa isa = Isa::kPortable;
  absl::Status status;
};

const Selection& Select() {
  static const Selection* s = [] {
    auto* sel = new Selection();
    const char* env = std::getenv("REFORMER_MAX_ISA");
    sel->status = ResolveIsa(HostCpu(), env, &sel->isa);
    if (!sel->status.ok()) {
      sel->isa = BestIsa(HostCpu());
      LOG_ERROR(sel->status.message());
    }
    LOG_INFO("CPU kernels: ", IsaName(sel->isa), " (CPU features: ", HostCpu().Summary(),
             env && *env ? absl::StrCat("; REFORMER_MAX_ISA=", env) : std::string(), ")");
    return sel;
  }();
  return *s;
}

}  // namespace

std::string CpuFeatures::Summary() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) absl::StrAppend(&s, s.empty() ? "" : " ", name);
  };
  add(sse42 && popcnt, "x86-64-v2");
  add(x86_64_v3, "avx2");
  add(x86_64_v4, "avx512");
  add(avx512_vnni, "avx512_vnni");
  add(avx512_bf16, "avx512_bf16");
  add(avx_vnni, "avx_vnni");
  add(amx_bf16, "amx_bf16");
  add(amx_int8, "amx_int8");
  return s.empty() ? std::string("(below x86-64-v2)") : s;
}

const CpuFeatures& HostCpu() {
  static const CpuFeatures f = Detect();
  return f;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kPortable: break;
  }
  return "portable";
}

Isa BestIsa(const CpuFeatures& cpu) {
  if (cpu.x86_64_v4) return Isa::kAvx512;
  if (cpu.x86_64_v3) return Isa::kAvx2;
  return Isa::kPortable;
}

absl::Status ResolveIsa(const CpuFeatures& cpu, const char* max_isa_env, Isa* isa) {
  *isa = BestIsa(cpu);
  if (max_isa_env == nullptr || *max_isa_env == '\0') return absl::OkStatus();
  const std::string v = absl::AsciiStrToLower(max_isa_env);
  Isa cap;
  if (v == "avx512") {
    cap = Isa::kAvx512;
  } else if (v == "avx2") {
    cap = Isa::kAvx2;
  } else if (v == "portable") {
    cap = Isa::kPortable;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("REFORMER_MAX_ISA='", max_isa_env,
                                                   "': expected avx512, avx2 or portable"));
  }
  if (static_cast<int>(cap) < static_cast<int>(*isa)) *isa = cap;
  return absl::OkStatus();
}

Isa SelectedIsa() { return Select().isa; }
const absl::Status& IsaStatus() { return Select().status; }

}  // namespace reformer
