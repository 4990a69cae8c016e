// oneDNN (2.6, v2 API) matmul for the engine: pre-packed weights (model-level, immutable, shared
// by all sessions) and a per-thread context that caches primitives by shape.
//
// This is the one place oneDNN exceptions are caught: every call returns absl::Status.
// A DnnlContext is confined to the thread that created it (oneDNN primitives with the default
// scratchpad must not run concurrently); a PackedWeight is immutable and may be shared.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/compute_type.h"

namespace dnnl {
class engine;
class stream;
class primitive;
}  // namespace dnnl

namespace reformer {

// Elementwise activation fused into a matmul as a oneDNN post-op.
enum class PostOp { kNone, kRelu, kGeluErf, kGeluTanh, kSwish, kTanh, kLogistic, kMish };

// B operand [K, N] of y = x · B, stored 64-byte aligned, plain row-major [K, N] (measured on
// oneDNN 2.6: blocked layouts from format_tag::any were no faster, docs/results/engine-perf2.md),
// in one of the compute types (engine/base/compute_type.h):
//   float32:  the values;
//   bfloat16: the values rounded to bf16 (nearest even);
//   int8:     round(B[k][n] / s[n]) in [-127, 127], s[n] = max_k |B[k][n]| / 127 per output
//             channel n (scales()).
class PackedWeight {
 public:
  PackedWeight() = default;
  // Builds B[k][n] = value(k, n).
  static PackedWeight Build(int64_t k, int64_t n, const std::function<float(int64_t, int64_t)>& value,
                            ComputeType type = ComputeType::kFloat32);
  // B = Wᵀ for a torch Linear weight block: B[k][n] = w[(row0 + n) * ld + col0 + k].
  static PackedWeight FromLinear(const float* w, int64_t ld, int64_t row0, int64_t col0, int64_t k,
                                 int64_t n, ComputeType type = ComputeType::kFloat32);
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  ComputeType type() const { return type_; }
  // float32 weights only (null otherwise).
  const float* data() const { return type_ == ComputeType::kFloat32 ? static_cast<const float*>(data_.get()) : nullptr; }
  const void* raw() const { return data_.get(); }
  // int8: the per-output-channel scales [n]; null otherwise.
  const float* scales() const { return scales_.get(); }
  size_t bytes() const;
  bool empty() const { return data_ == nullptr; }

 private:
  // Converts float32 storage to `type`.
  void ConvertTo(ComputeType type);
  int64_t k_ = 0, n_ = 0;
  ComputeType type_ = ComputeType::kFloat32;
  std::shared_ptr<void> data_;
  std::shared_ptr<float> scales_;
};

// dst[M, N] (row stride ldc) = src[M, K] (row stride lda) · B (+ bias[N]) (post-op) (+ dst if
// accumulate). B is either a PackedWeight or a raw matrix given by pointer and strides.
struct MatmulCall {
  int64_t m = 0, k = 0, n = 0;
  const float* src = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t b_stride_k = 0, b_stride_n = 1;  // element strides of B[k][n]
  const float* bias = nullptr;
  float* dst = nullptr;
  int64_t ldc = 0;
  PostOp post_op = PostOp::kNone;
  float post_alpha = 0.f;
  bool accumulate = false;

  // A packed weight of any compute type (set by With); when it is not float32, src is converted
  // to that type on the fly (bf16 rounding; int8 per-row quantization) and `b` is unused.
  const PackedWeight* packed = nullptr;

  // Convenience: B from a packed weight.
  MatmulCall& With(const PackedWeight& w) {
    packed = &w;
    b = w.data();
    k = w.k();
    n = w.n();
    b_stride_k = w.n();
    b_stride_n = 1;
    return *this;
  }
};

// oneDNN's instruction set in this process (dnnl::get_effective_cpu_isa(): the CPU's best, or
// lower under ONEDNN_MAX_CPU_ISA), e.g. "avx512_core_bf16".
const char* DnnlCpuIsaName();

class Workspace;

// OK when oneDNN in this process can run `type`'s matmuls (ONEDNN_MAX_CPU_ISA may cap it below the
// CPU's level); else FAILED_PRECONDITION naming what is missing.
absl::Status DnnlSupports(ComputeType type);

// Bytes of the conversion buffers a `type` matmul with m rows allocates at most for any k <= max_k,
// n <= max_n (0 for float32).
size_t MatmulScratchBytes(ComputeType type, int64_t m, int64_t max_k, int64_t max_n);

class DnnlContext {
 public:
  static absl::StatusOr<std::unique_ptr<DnnlContext>> Create();
  ~DnnlContext();
  DnnlContext(const DnnlContext&) = delete;
  DnnlContext& operator=(const DnnlContext&) = delete;

  // Runs one matmul (blocking). Primitives are cached by shape/strides/post-ops/type. Conversion
  // buffers of non-float32 calls come from the workspace set by set_workspace (counted there).
  absl::Status Matmul(const MatmulCall& call);
  void set_workspace(Workspace* ws) { ws_ = ws; }
  // oneDNN's implementation name for `call` (e.g. "brg:avx512_core"), for logs and benchmarks.
  absl::StatusOr<std::string> MatmulImplInfo(const MatmulCall& call);
  size_t num_cached_primitives() const { return cache_.size(); }

 private:
  DnnlContext();
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int,
                         float, bool, int>;
  // bfloat16 / int8 paths (the src conversion, then oneDNN).
  absl::Status MatmulBf16(const MatmulCall& call);
  absl::Status MatmulInt8(const MatmulCall& call);
  struct Int8Step {
    dnnl::primitive* primitive = nullptr;
    size_t scratchpad_bytes = 0;
  };
  Int8Step PrepareInt8Step(const MatmulCall& call, int64_t mb);
  static size_t MaxScratchpad(const std::map<int64_t, Int8Step>& steps);
  void PrepareThreads(int threads, size_t scratchpad);
  void RunInt8Share(const MatmulCall& call, const std::map<int64_t, Int8Step>& steps, int64_t r_begin,
                    int64_t r_end, int64_t step, uint8_t* slice, int t);
  absl::Status Int8Activation(const MatmulCall& call);
  Workspace* Scratch();
  // The cached primitive for `key`, created by `make` on first use.
  dnnl::primitive* Cached(const Key& key, const std::function<std::unique_ptr<dnnl::primitive>()>& make);
  std::unique_ptr<dnnl::engine> engine_;
  std::unique_ptr<dnnl::stream> stream_;
  std::map<Key, std::unique_ptr<dnnl::primitive>> cache_;
  Workspace* ws_ = nullptr;
  std::unique_ptr<Workspace> own_ws_;  // when no workspace was set
  // int8: scratchpad bytes of each cached s8 primitive; per-thread streams and scratchpads.
  std::map<Key, size_t> int8_scratch_;
  std::vector<std::unique_ptr<dnnl::stream>> thread_streams_;
  std::vector<std::shared_ptr<void>> thread_scratch_;
  std::vector<size_t> thread_scratch_bytes_;
};

}  // namespace reformer
