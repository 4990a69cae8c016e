#include "engine/dnnl/matmul.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <mutex>
#include <algorithm>
#include <cmath>
#include <vector>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "engine/base/check.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/tensor/workspace.h"
#include "engine/base/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include <omp.h>

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

// Rows a thread quantizes, multiplies and dequantizes in one step. Integer accumulation is exact,
// so a row's result does not depend on the step it is in. Measured (docs/results/engine-perf2.md,
// "2026-12-07"): oneDNN 2.6's int8 matmul is brgemm at avx512_core_vnni, where 128-row steps keep a
// thread's s8 rows and s32 products (128 x (K + 4N) bytes) in its L2 and taller steps gain nothing;
// at avx2_vnni it is gemm:jit, whose cost per call makes short steps dear (enwik8 4096 tokens, int8
// vs float32: 0.78x with 64-row steps, 1.2x with 128, 1.7x with 512, 1.8x with 1024; 512 rows keep
// the buffers, 512 x (K + 4N) bytes per thread, within the session's memory estimate).
int64_t Int8StepRows() {
  static const int64_t rows =
      (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & static_cast<unsigned>(dnnl::cpu_isa::avx512_core_vnni)) ==
              static_cast<unsigned>(dnnl::cpu_isa::avx512_core_vnni)
          ? 128
          : 512;
  return rows;
}

// The per-thread split of an int8 call: thread t takes rows [t * share, min(m, (t + 1) * share)).
struct Int8Split {
  int threads;
  int64_t share, step;  // rows per thread; rows per step (<= Int8StepRows())
};

Int8Split SplitInt8(int64_t m) {
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), m)));
  const int64_t share = (m + threads - 1) / threads;
  return {threads, share, std::min(share, Int8StepRows())};
}

// One thread's byte slice of the int8 buffers: s8 rows, row scales, s32 products (64-byte aligned).
size_t Int8SliceBytes(int64_t step, int64_t k, int64_t n) {
  const auto up = [](size_t b) { return (b + 63) / 64 * 64; };
  return up(static_cast<size_t>(step * k)) + up(sizeof(float) * step) + up(sizeof(int32_t) * step * n);
}


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
// accumulation and output; bias and post-ops as in float32. Up to 2^18 elements (a 512-row tile
// at K = 512: 1 MiB read) the rounding runs on the calling thread, which saves a second parallel
// region per matmul beside oneDNN's own: bfloat16/float32 on 512-token documents at 2 threads went
// from 0.98-1.03 to 1.03-1.18 (docs/results/engine-perf2.md, "bfloat16 on short documents").
// The rounding is elementwise, so the result is the same bits either way.
absl::Status DnnlContext::MatmulBf16(const MatmulCall& c) {
  WsBuffer<uint16_t> x(Scratch(), static_cast<size_t>(c.m * c.k), kUninitialized);
  const auto to_bf16 = kernels::Active().to_bf16;
  uint16_t* xd = x.data();
#pragma omp parallel for schedule(static) if (c.m * c.k > (int64_t{1} << 18))
  for (int64_t r = 0; r < c.m; ++r) to_bf16(c.src + r * c.lda, c.k, xd + r * c.k);
  Key key{c.m, c.k, c.n, c.k, c.b_stride_k, c.b_stride_n, c.ldc, c.bias != nullptr,
          static_cast<int>(c.post_op), c.post_alpha, c.accumulate, 1};
  dnnl::primitive* p = Cached(key, [&] { return MakeMatmul(*engine_, c, dt::bf16, dt::bf16, dt::f32, c.m, c.k, c.ldc, true); });
  Run(p, stream_.get(), *engine_, c, xd, dt::bf16, c.m, c.k, c.packed->raw(), dt::bf16, c.dst, dt::f32, c.ldc,
      c.bias != nullptr);
  return absl::OkStatus();
}

// int8: every thread runs its own share of rows through quantize -> oneDNN s8 x s8 -> s32 ->
// dequantize, step by step, in ONE parallel region per call. oneDNN runs single-threaded inside
// the region (its OpenMP threading does not nest), on this thread's stream and scratchpad. The
// earlier form (three parallel regions and a oneDNN call per 256-row block, threads meeting at a
// barrier four times per block) spent more time in barriers and thread wake-ups than in the
// VNNI products at K, N = 128-512 (docs/results/engine-perf2.md, "2026-12-07").
absl::Status DnnlContext::MatmulInt8(const MatmulCall& c) {
  const bool relu = c.post_op == PostOp::kRelu;
  const bool other_act = c.post_op != PostOp::kNone && !relu;
  if (other_act && c.accumulate)
    return absl::UnimplementedError("int8 matmul: an activation other than ReLU together with accumulation");
  const Int8Split sp = SplitInt8(c.m);
  const size_t slice = Int8SliceBytes(sp.step, c.k, c.n);
  WsBuffer<uint8_t> buf(Scratch(), slice * sp.threads + 64, kUninitialized);
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) / 64 * 64);
  // Primitives (one per step height) and per-thread streams/scratchpads, made before the region.
  std::map<int64_t, Int8Step> steps;
  for (int t = 0; t < sp.threads; ++t)
    for (int64_t r = t * sp.share; r < std::min(c.m, (t + 1) * sp.share); r += sp.step)
      steps.emplace(std::min(sp.step, std::min(c.m, (t + 1) * sp.share) - r), Int8Step{});
  for (auto& [mb, st] : steps) st = PrepareInt8Step(c, mb);
  PrepareThreads(sp.threads, MaxScratchpad(steps));
  std::atomic<bool> failed{false};
  std::string error;
#pragma omp parallel num_threads(sp.threads)
  {
    try {
      // Every share is run even when the team is smaller (a call from inside another parallel region).
      for (int t = omp_get_thread_num(); t < sp.threads; t += omp_get_num_threads())
        RunInt8Share(c, steps, t * sp.share, std::min(c.m, (t + 1) * sp.share), sp.step, base + t * slice, t);
    } catch (const dnnl::error& e) {
#pragma omp critical(reformer_int8_error)
      error = e.what();
      failed = true;
    }
  }
  if (failed) return absl::InternalError(absl::StrCat("oneDNN int8 matmul failed: ", error));
  if (other_act) RETURN_IF_ERROR(Int8Activation(c));
  return absl::OkStatus();
}

// The s8 x s8 -> s32 primitive for steps of `mb` rows, with a user scratchpad (each thread passes
// its own, so threads run the one primitive at once).
DnnlContext::Int8Step DnnlContext::PrepareInt8Step(const MatmulCall& c, int64_t mb) {
  Key key{mb, c.k, c.n, c.k, c.b_stride_k, c.b_stride_n, c.n, false, 0, 0.f, false, 2};
  auto it = int8_scratch_.find(key);
  if (it == int8_scratch_.end()) {
    md src_md({mb, c.k}, dt::s8, dnnl::memory::dims{c.k, 1});
    md b_md({c.k, c.n}, dt::s8, dnnl::memory::dims{c.b_stride_k, c.b_stride_n});
    md dst_md({mb, c.n}, dt::s32, dnnl::memory::dims{c.n, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, b_md, dst_md), attr, *engine_);
    Cached(key, [&] { return std::make_unique<dnnl::matmul>(pd); });
    it = int8_scratch_.emplace(key, pd.scratchpad_desc().get_size()).first;
  }
  return Int8Step{cache_.at(key).get(), it->second};
}

size_t DnnlContext::MaxScratchpad(const std::map<int64_t, Int8Step>& steps) {
  size_t bytes = 0;
  for (const auto& [mb, st] : steps) bytes = std::max(bytes, st.scratchpad_bytes);
  return bytes;
}

// One stream per thread and a scratchpad of at least `scratchpad` bytes each (kept by the
// context: a weight's packed copy and compensation, a few hundred KiB at most).
void DnnlContext::PrepareThreads(int threads, size_t scratchpad) {
  while (static_cast<int>(thread_streams_.size()) < threads) {
    thread_streams_.push_back(std::make_unique<dnnl::stream>(*engine_));
    thread_scratch_.emplace_back();
    thread_scratch_bytes_.push_back(0);
  }
  for (int t = 0; t < threads; ++t)
    if (thread_scratch_bytes_[t] < scratchpad) {
      thread_scratch_[t] = AlignedBytes(scratchpad);
      thread_scratch_bytes_[t] = scratchpad;
    }
}

// Thread t's rows [r_begin, r_end) in steps of `step` rows, through its slice of the buffers.
void DnnlContext::RunInt8Share(const MatmulCall& c, const std::map<int64_t, Int8Step>& steps, int64_t r_begin,
                               int64_t r_end, int64_t step, uint8_t* slice, int t) {
  const kernels::KernelTable& kt = kernels::Active();
  int8_t* q = reinterpret_cast<int8_t*>(slice);
  float* rs = reinterpret_cast<float*>(slice + (step * c.k + 63) / 64 * 64);
  int32_t* acc = reinterpret_cast<int32_t*>(reinterpret_cast<uint8_t*>(rs) + (sizeof(float) * step + 63) / 64 * 64);
  const bool relu = c.post_op == PostOp::kRelu;
  for (int64_t r0 = r_begin; r0 < r_end; r0 += step) {
    const int64_t mb = std::min(step, r_end - r0);
    for (int64_t r = 0; r < mb; ++r) rs[r] = kt.quantize_s8(c.src + (r0 + r) * c.lda, c.k, q + r * c.k);
    const Int8Step& st = steps.at(mb);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(md({mb, c.k}, dt::s8, dnnl::memory::dims{c.k, 1}), *engine_, q)},
        {DNNL_ARG_WEIGHTS, dnnl::memory(md({c.k, c.n}, dt::s8, dnnl::memory::dims{c.b_stride_k, c.b_stride_n}),
                                        *engine_, const_cast<void*>(c.packed->raw()))},
        {DNNL_ARG_DST, dnnl::memory(md({mb, c.n}, dt::s32, dnnl::memory::dims{c.n, 1}), *engine_, acc)},
        {DNNL_ARG_SCRATCHPAD, dnnl::memory(md({static_cast<int64_t>(st.scratchpad_bytes)}, dt::u8, dnnl::memory::dims{1}),
                                           *engine_, thread_scratch_[t].get())}};
    st.primitive->execute(*thread_streams_[t], args);
    thread_streams_[t]->wait();
    const float* cs = c.packed->scales();
    for (int64_t r = 0; r < mb; ++r)
      kt.dequantize_row(acc + r * c.n, c.n, rs[r], cs, c.bias, relu, c.accumulate, c.dst + (r0 + r) * c.ldc);
  }
}

// An activation other than ReLU, as a oneDNN eltwise over the whole int8 result.
absl::Status DnnlContext::Int8Activation(const MatmulCall& c) {
  Key ek{c.m, 0, c.n, 0, 0, 0, c.ldc, false, static_cast<int>(c.post_op), c.post_alpha, false, 3};
  dnnl::primitive* e = Cached(ek, [&]() -> std::unique_ptr<dnnl::primitive> {
    md d({c.m, c.n}, dt::f32, dnnl::memory::dims{c.ldc, 1});
    dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, ToAlgorithm(c.post_op), d, c.post_alpha, 0.f);
    return std::make_unique<dnnl::eltwise_forward>(dnnl::eltwise_forward::primitive_desc(desc, *engine_));
  });
  dnnl::memory mem(md({c.m, c.n}, dt::f32, dnnl::memory::dims{c.ldc, 1}), *engine_, c.dst);
  e->execute(*stream_, {{DNNL_ARG_SRC, mem}, {DNNL_ARG_DST, mem}});
  stream_->wait();
  return absl::OkStatus();
}

absl::StatusOr<std::string> DnnlContext::MatmulImplInfo(const MatmulCall& c) {
  const ComputeType type = c.packed ? c.packed->type() : ComputeType::kFloat32;
  const dt t = type == ComputeType::kFloat32 ? dt::f32 : type == ComputeType::kBFloat16 ? dt::bf16 : dt::s8;
  try {
    const int64_t m = type == ComputeType::kInt8 ? SplitInt8(c.m).step : c.m;
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
  const Int8Split sp = SplitInt8(m);
  return Int8SliceBytes(sp.step, max_k, max_n) * sp.threads + 64;
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
