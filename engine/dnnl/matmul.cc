#include "engine/dnnl/matmul.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <algorithm>
#include <cmath>
#include <vector>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "engine/base/check.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/tensor/workspace.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace reformer {
namespace {

std::shared_ptr<void> AlignedBytes(size_t n) {
  size_t bytes = (n + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  REFORMER_CHECK(p != nullptr);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

std::shared_ptr<float> AlignedFloats(int64_t n) {
  return std::static_pointer_cast<float>(AlignedBytes(static_cast<size_t>(n) * sizeof(float)));
}

// A 2 MiB-aligned anonymous mapping advised for huge pages; unmapped with the last weight in it.
struct WeightChunk {
  void* base = nullptr;
  size_t size = 0;
  explicit WeightChunk(size_t bytes) : size(bytes) {
    constexpr size_t kHuge = size_t{2} << 20;
    void* raw = mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REFORMER_CHECK(raw != MAP_FAILED);
    const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (begin + kHuge - 1) / kHuge * kHuge;
    if (aligned > begin) munmap(raw, aligned - begin);
    munmap(reinterpret_cast<void*>(aligned + bytes), begin + kHuge - aligned);  // > 0 bytes
    base = reinterpret_cast<void*>(aligned);
    madvise(base, bytes, MADV_HUGEPAGE);  // advisory, as the workspace's blocks (workspace.h)
  }
  ~WeightChunk() { munmap(base, size); }
};

// Storage of a packed weight. A model's weights are dozens of blocks of 64 KiB to a few MiB; from
// the heap each takes 4 KiB pages, one fault per page on first touch (~2,500 faults for the
// crime-and-punishment shape, a dear part of loading on a VM: docs/results/forward.md). So blocks
// of at least 64 KiB are carved one after another from huge-page chunks of 2 MiB (or their own
// chunk when larger); a chunk lives while any weight in it does. Under AddressSanitizer every
// block comes from the heap, as the workspace's (engine/tensor/workspace.h).
std::shared_ptr<void> WeightBytes(size_t n) {
  constexpr size_t kChunk = size_t{2} << 20, kMinCarved = size_t{64} << 10;
  const size_t bytes = (n + 63) / 64 * 64;
  if (!Workspace::kRecyclesBlocks || bytes < kMinCarved) return AlignedBytes(n);
  static std::mutex mu;
  static std::weak_ptr<WeightChunk> current;
  static size_t used = 0;
  std::lock_guard<std::mutex> lock(mu);
  std::shared_ptr<WeightChunk> chunk = current.lock();
  if (!chunk || used + bytes > chunk->size) {
    chunk = std::make_shared<WeightChunk>((bytes + kChunk - 1) / kChunk * kChunk);
    current = chunk;
    used = 0;
  }
  void* p = static_cast<uint8_t*>(chunk->base) + used;
  used += bytes;
  return std::shared_ptr<void>(chunk, p);  // shares the chunk's ownership
}

std::shared_ptr<float> WeightFloats(int64_t n) {
  return std::static_pointer_cast<float>(WeightBytes(static_cast<size_t>(n) * sizeof(float)));
}

dnnl::algorithm ToAlgorithm(PostOp op) {
  switch (op) {
    case PostOp::kRelu: return dnnl::algorithm::eltwise_relu;
    case PostOp::kGeluErf: return dnnl::algorithm::eltwise_gelu_erf;
    case PostOp::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case PostOp::kSwish: return dnnl::algorithm::eltwise_swish;
    case PostOp::kTanh: return dnnl::algorithm::eltwise_tanh;
    case PostOp::kLogistic: return dnnl::algorithm::eltwise_logistic;
    case PostOp::kMish: return dnnl::algorithm::eltwise_mish;
    case PostOp::kNone: break;
  }
  return dnnl::algorithm::undef;
}

}  // namespace

PackedWeight PackedWeight::Build(int64_t k, int64_t n,
                                 const std::function<float(int64_t, int64_t)>& value, ComputeType type) {
  PackedWeight w;
  w.k_ = k;
  w.n_ = n;
  std::shared_ptr<float> f = type == ComputeType::kFloat32 ? WeightFloats(k * n) : AlignedFloats(k * n);
  float* d = f.get();
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < n; ++j) d[i * n + j] = value(i, j);
  w.data_ = std::move(f);
  w.ConvertTo(type);
  return w;
}

PackedWeight PackedWeight::FromLinear(const float* src, int64_t ld, int64_t row0, int64_t col0,
                                      int64_t k, int64_t n, ComputeType type) {
  PackedWeight w;
  w.k_ = k;
  w.n_ = n;
  // Float32 values are the weight itself; for other types a staging copy (heap) converted below.
  std::shared_ptr<float> f = type == ComputeType::kFloat32 ? WeightFloats(k * n) : AlignedFloats(k * n);
  float* d = f.get();
  // Transpose in 32x32 blocks (cache friendly for the large FFN matrices).
  constexpr int64_t kB = 32;
  for (int64_t j0 = 0; j0 < n; j0 += kB)
    for (int64_t i0 = 0; i0 < k; i0 += kB)
      for (int64_t j = j0; j < std::min(n, j0 + kB); ++j) {
        const float* row = src + (row0 + j) * ld + col0;
        for (int64_t i = i0; i < std::min(k, i0 + kB); ++i) d[i * n + j] = row[i];
      }
  w.data_ = std::move(f);
  w.ConvertTo(type);
  return w;
}

void PackedWeight::ConvertTo(ComputeType type) {
  type_ = type;
  if (type == ComputeType::kFloat32) return;
  const float* f = static_cast<const float*>(data_.get());
  const size_t count = static_cast<size_t>(k_ * n_);
  if (type == ComputeType::kBFloat16) {
    std::shared_ptr<void> b = WeightBytes(count * sizeof(uint16_t));
    kernels::Active().to_bf16(f, static_cast<int64_t>(count), static_cast<uint16_t*>(b.get()));
    data_ = std::move(b);
    return;
  }
  // int8: one symmetric scale per output channel (column n of B).
  std::shared_ptr<float> scales = AlignedFloats(n_);
  std::vector<float> amax(n_, 0.f);
  for (int64_t i = 0; i < k_; ++i)
    for (int64_t j = 0; j < n_; ++j) amax[j] = std::max(amax[j], std::abs(f[i * n_ + j]));
  std::shared_ptr<void> q = WeightBytes(count);
  int8_t* qd = static_cast<int8_t*>(q.get());
  for (int64_t j = 0; j < n_; ++j) scales.get()[j] = amax[j] / 127.f;
  for (int64_t i = 0; i < k_; ++i)
    for (int64_t j = 0; j < n_; ++j) {
      const float inv = amax[j] > 0.f ? 127.f / amax[j] : 0.f;
      const float v = std::nearbyint(f[i * n_ + j] * inv);
      qd[i * n_ + j] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
    }
  data_ = std::move(q);
  scales_ = std::move(scales);
}

size_t PackedWeight::bytes() const {
  const size_t count = static_cast<size_t>(k_ * n_);
  switch (type_) {
    case ComputeType::kBFloat16: return count * sizeof(uint16_t);
    case ComputeType::kInt8: return count + static_cast<size_t>(n_) * sizeof(float);
    case ComputeType::kFloat32: break;
  }
  return count * sizeof(float);
}

const char* DnnlCpuIsaName() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: break;
  }
  return "unknown";
}

DnnlContext::DnnlContext() = default;
DnnlContext::~DnnlContext() = default;

absl::StatusOr<std::unique_ptr<DnnlContext>> DnnlContext::Create() {
  std::unique_ptr<DnnlContext> ctx(new DnnlContext());
  try {
    ctx->engine_ = std::make_unique<dnnl::engine>(dnnl::engine::kind::cpu, 0);
    ctx->stream_ = std::make_unique<dnnl::stream>(*ctx->engine_);
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN engine creation failed: ", e.what()));
  }
  return ctx;
}

namespace {

using dt = dnnl::memory::data_type;
using md = dnnl::memory::desc;

// Rows per int8 call: the s32 products of a block stay in cache for the dequantizing epilogue.
// Integer accumulation is exact, so a row's result does not depend on the block it is in.
constexpr int64_t kInt8BlockRows = 256;

dnnl::primitive_attr PostOpAttr(const MatmulCall& c, bool eltwise) {
  dnnl::post_ops po;
  if (eltwise && c.post_op != PostOp::kNone) po.append_eltwise(1.f, ToAlgorithm(c.post_op), c.post_alpha, 0.f);
  if (c.accumulate) po.append_sum(1.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  return attr;
}

dnnl::matmul::primitive_desc MatmulPd(const dnnl::engine& eng, const MatmulCall& c, dt src_t, dt wei_t, dt dst_t,
                                      int64_t m, int64_t lda, int64_t ldc, bool post_ops) {
  md src_md({m, c.k}, src_t, dnnl::memory::dims{lda, 1});
  md b_md({c.k, c.n}, wei_t, dnnl::memory::dims{c.b_stride_k, c.b_stride_n});
  md dst_md({m, c.n}, dst_t, dnnl::memory::dims{ldc, 1});
  md bias_md({1, c.n}, dt::f32, dnnl::memory::dims{c.n, 1});
  const bool bias = post_ops && c.bias != nullptr;
  dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(src_md, b_md, bias_md, dst_md)
                                 : dnnl::matmul::desc(src_md, b_md, dst_md);
  return dnnl::matmul::primitive_desc(desc, post_ops ? PostOpAttr(c, true) : dnnl::primitive_attr(), eng);
}

std::unique_ptr<dnnl::primitive> MakeMatmul(const dnnl::engine& eng, const MatmulCall& c, dt src_t, dt wei_t,
                                            dt dst_t, int64_t m, int64_t lda, int64_t ldc, bool post_ops) {
  return std::make_unique<dnnl::matmul>(MatmulPd(eng, c, src_t, wei_t, dst_t, m, lda, ldc, post_ops));
}

void Run(dnnl::primitive* p, dnnl::stream* s, const dnnl::engine& eng, const MatmulCall& c, const void* src,
         dt src_t, int64_t m, int64_t lda, const void* b, dt wei_t, void* dst, dt dst_t, int64_t ldc, bool bias) {
  md src_md({m, c.k}, src_t, dnnl::memory::dims{lda, 1});
  md b_md({c.k, c.n}, wei_t, dnnl::memory::dims{c.b_stride_k, c.b_stride_n});
  md dst_md({m, c.n}, dst_t, dnnl::memory::dims{ldc, 1});
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, dnnl::memory(src_md, eng, const_cast<void*>(src))},
                                             {DNNL_ARG_WEIGHTS, dnnl::memory(b_md, eng, const_cast<void*>(b))},
                                             {DNNL_ARG_DST, dnnl::memory(dst_md, eng, dst)}};
  if (bias)
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(md({1, c.n}, dt::f32, dnnl::memory::dims{c.n, 1}), eng,
                                             const_cast<float*>(c.bias)));
  p->execute(*s, args);
  s->wait();
}

bool IsaHas(dnnl::cpu_isa isa, dnnl::cpu_isa level) {
  return (static_cast<unsigned>(isa) & static_cast<unsigned>(level)) == static_cast<unsigned>(level);
}

}  // namespace

dnnl::primitive* DnnlContext::Cached(const Key& key, const std::function<std::unique_ptr<dnnl::primitive>()>& make) {
  auto it = cache_.find(key);
  if (it == cache_.end()) it = cache_.emplace(key, make()).first;
  return it->second.get();
}

absl::Status DnnlContext::Matmul(const MatmulCall& c) {
  REFORMER_CHECK(c.m > 0 && c.k > 0 && c.n > 0);
  const ComputeType type = c.packed ? c.packed->type() : ComputeType::kFloat32;
  try {
    if (type == ComputeType::kBFloat16) return MatmulBf16(c);
    if (type == ComputeType::kInt8) return MatmulInt8(c);
    Key key{c.m, c.k, c.n, c.lda, c.b_stride_k, c.b_stride_n, c.ldc, c.bias != nullptr,
            static_cast<int>(c.post_op), c.post_alpha, c.accumulate, 0};
    dnnl::primitive* p = Cached(key, [&] { return MakeMatmul(*engine_, c, dt::f32, dt::f32, dt::f32, c.m, c.lda, c.ldc, true); });
    Run(p, stream_.get(), *engine_, c, c.src, dt::f32, c.m, c.lda, c.b, dt::f32, c.dst, dt::f32, c.ldc,
        c.bias != nullptr);
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN ", ComputeTypeName(type), " matmul ", c.m, "x", c.k, "x", c.n,
                                            " failed: ", e.what()));
  }
  return absl::OkStatus();
}

Workspace* DnnlContext::Scratch() {
  if (ws_ != nullptr) return ws_;
  if (!own_ws_) own_ws_ = std::make_unique<Workspace>();
  return own_ws_.get();
}

// src rounded to bf16 (one pass, rows in parallel), then oneDNN's bf16 matmul with f32
// accumulation and output; bias and post-ops as in float32.
absl::Status DnnlContext::MatmulBf16(const MatmulCall& c) {
  WsBuffer<uint16_t> x(Scratch(), static_cast<size_t>(c.m * c.k), kUninitialized);
  const auto to_bf16 = kernels::Active().to_bf16;
  uint16_t* xd = x.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < c.m; ++r) to_bf16(c.src + r * c.lda, c.k, xd + r * c.k);
  Key key{c.m, c.k, c.n, c.k, c.b_stride_k, c.b_stride_n, c.ldc, c.bias != nullptr,
          static_cast<int>(c.post_op), c.post_alpha, c.accumulate, 1};
  dnnl::primitive* p = Cached(key, [&] { return MakeMatmul(*engine_, c, dt::bf16, dt::bf16, dt::f32, c.m, c.k, c.ldc, true); });
  Run(p, stream_.get(), *engine_, c, xd, dt::bf16, c.m, c.k, c.packed->raw(), dt::bf16, c.dst, dt::f32, c.ldc,
      c.bias != nullptr);
  return absl::OkStatus();
}

// Blocks of kInt8BlockRows rows: quantize each row (its own scale), s8 x s8 -> s32 in oneDNN,
// then dequantize (row scale x channel scale), bias, ReLU and accumulation in one pass; any other
// activation runs as a oneDNN eltwise on the block afterwards.
absl::Status DnnlContext::MatmulInt8(const MatmulCall& c) {
  const bool relu = c.post_op == PostOp::kRelu;
  const bool other_act = c.post_op != PostOp::kNone && !relu;
  if (other_act && c.accumulate)
    return absl::UnimplementedError("int8 matmul: an activation other than ReLU together with accumulation");
  const int64_t rows = std::min(c.m, kInt8BlockRows);
  Workspace* ws = Scratch();
  WsBuffer<int8_t> q(ws, static_cast<size_t>(rows * c.k), kUninitialized);
  WsBuffer<float> row_scale(ws, static_cast<size_t>(rows), kUninitialized);
  WsBuffer<int32_t> acc(ws, static_cast<size_t>(rows * c.n), kUninitialized);
  const kernels::KernelTable& kt = kernels::Active();
  for (int64_t r0 = 0; r0 < c.m; r0 += rows) {
    const int64_t mb = std::min(rows, c.m - r0);
    int8_t* qd = q.data();
    float* rs = row_scale.data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < mb; ++r) rs[r] = kt.quantize_s8(c.src + (r0 + r) * c.lda, c.k, qd + r * c.k);
    Key key{mb, c.k, c.n, c.k, c.b_stride_k, c.b_stride_n, c.n, false, 0, 0.f, false, 2};
    dnnl::primitive* p = Cached(key, [&] { return MakeMatmul(*engine_, c, dt::s8, dt::s8, dt::s32, mb, c.k, c.n, false); });
    Run(p, stream_.get(), *engine_, c, qd, dt::s8, mb, c.k, c.packed->raw(), dt::s8, acc.data(), dt::s32, c.n, false);
    const int32_t* ad = acc.data();
    const float* cs = c.packed->scales();
    float* dst = c.dst + r0 * c.ldc;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < mb; ++r)
      kt.dequantize_row(ad + r * c.n, c.n, rs[r], cs, c.bias, relu, c.accumulate, dst + r * c.ldc);
    if (other_act) {
      Key ek{mb, 0, c.n, 0, 0, 0, c.ldc, false, static_cast<int>(c.post_op), c.post_alpha, false, 3};
      dnnl::primitive* e = Cached(ek, [&]() -> std::unique_ptr<dnnl::primitive> {
        md d({mb, c.n}, dt::f32, dnnl::memory::dims{c.ldc, 1});
        dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, ToAlgorithm(c.post_op), d, c.post_alpha, 0.f);
        return std::make_unique<dnnl::eltwise_forward>(dnnl::eltwise_forward::primitive_desc(desc, *engine_));
      });
      dnnl::memory mem(md({mb, c.n}, dt::f32, dnnl::memory::dims{c.ldc, 1}), *engine_, dst);
      e->execute(*stream_, {{DNNL_ARG_SRC, mem}, {DNNL_ARG_DST, mem}});
      stream_->wait();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DnnlContext::MatmulImplInfo(const MatmulCall& c) {
  const ComputeType type = c.packed ? c.packed->type() : ComputeType::kFloat32;
  const dt t = type == ComputeType::kFloat32 ? dt::f32 : type == ComputeType::kBFloat16 ? dt::bf16 : dt::s8;
  try {
    const int64_t m = type == ComputeType::kInt8 ? std::min(c.m, kInt8BlockRows) : c.m;
    auto pd = MatmulPd(*engine_, c, t, t, type == ComputeType::kInt8 ? dt::s32 : dt::f32, m,
                       type == ComputeType::kFloat32 ? c.lda : c.k, type == ComputeType::kInt8 ? c.n : c.ldc,
                       type != ComputeType::kInt8);
    return std::string(pd.impl_info_str());
  } catch (const dnnl::error& e) {
    return absl::InternalError(e.what());
  }
}

size_t MatmulScratchBytes(ComputeType type, int64_t m, int64_t max_k, int64_t max_n) {
  if (type == ComputeType::kBFloat16) return sizeof(uint16_t) * static_cast<size_t>(m * max_k);
  if (type != ComputeType::kInt8) return 0;
  const int64_t rows = std::min(m, kInt8BlockRows);
  return static_cast<size_t>(rows * max_k) + sizeof(float) * rows + sizeof(int32_t) * static_cast<size_t>(rows * max_n);
}

absl::Status DnnlSupports(ComputeType type) {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  const std::string where = absl::StrCat("oneDNN runs at ", DnnlCpuIsaName(),
                                         cap ? absl::StrCat(" (ONEDNN_MAX_CPU_ISA=", cap, ")") : std::string());
  if (type == ComputeType::kBFloat16 && !IsaHas(isa, dnnl::cpu_isa::avx512_core_bf16))
    return absl::FailedPreconditionError(absl::StrCat(
        "compute type bfloat16 needs oneDNN's avx512_core_bf16 level (AVX512_BF16 instructions); ", where));
  if (type == ComputeType::kInt8 && !IsaHas(isa, dnnl::cpu_isa::avx512_core_vnni) &&
      !IsaHas(isa, dnnl::cpu_isa::avx2_vnni))
    return absl::FailedPreconditionError(absl::StrCat(
        "compute type int8 needs oneDNN's avx512_core_vnni or avx2_vnni level (AVX512_VNNI or AVX_VNNI "
        "instructions: without them oneDNN's int8 products saturate); ", where));
  return absl::OkStatus();
}

}  // namespace reformer
