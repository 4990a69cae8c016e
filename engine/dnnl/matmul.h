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
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dnnl {
class engine;
class stream;
class primitive;
}  // namespace dnnl

namespace reformer {

// Elementwise activation fused into a matmul as a oneDNN post-op.
enum class PostOp { kNone, kRelu, kGeluErf, kGeluTanh, kSwish, kTanh, kLogistic, kMish };

// B operand [K, N] of y = x · B, stored 64-byte aligned in the layout the matmul primitive uses
// (plain row-major [K, N] on this oneDNN/CPU: the f32 gemm matmul takes no blocked weights).
class PackedWeight {
 public:
  PackedWeight() = default;
  // Builds B[k][n] = value(k, n).
  static PackedWeight Build(int64_t k, int64_t n, const std::function<float(int64_t, int64_t)>& value);
  // B = Wᵀ for a torch Linear weight block: B[k][n] = w[(row0 + n) * ld + col0 + k].
  static PackedWeight FromLinear(const float* w, int64_t ld, int64_t row0, int64_t col0, int64_t k,
                                 int64_t n);
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  const float* data() const { return data_.get(); }
  size_t bytes() const { return static_cast<size_t>(k_ * n_) * sizeof(float); }
  bool empty() const { return data_ == nullptr; }

 private:
  int64_t k_ = 0, n_ = 0;
  std::shared_ptr<float> data_;
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

  // Convenience: B from a packed weight.
  MatmulCall& With(const PackedWeight& w) {
    b = w.data();
    k = w.k();
    n = w.n();
    b_stride_k = w.n();
    b_stride_n = 1;
    return *this;
  }
};

class DnnlContext {
 public:
  static absl::StatusOr<std::unique_ptr<DnnlContext>> Create();
  ~DnnlContext();
  DnnlContext(const DnnlContext&) = delete;
  DnnlContext& operator=(const DnnlContext&) = delete;

  // Runs one matmul (blocking). Primitives are cached by shape/strides/post-ops.
  absl::Status Matmul(const MatmulCall& call);
  size_t num_cached_primitives() const { return cache_.size(); }

 private:
  DnnlContext();
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int,
                         float, bool>;
  std::unique_ptr<dnnl::engine> engine_;
  std::unique_ptr<dnnl::stream> stream_;
  std::map<Key, std::unique_ptr<dnnl::primitive>> cache_;
};

}  // namespace reformer
