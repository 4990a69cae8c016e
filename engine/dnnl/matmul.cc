#include "engine/dnnl/matmul.h"

#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "engine/base/check.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace reformer {
namespace {

std::shared_ptr<float> AlignedFloats(int64_t n) {
  size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  REFORMER_CHECK(p != nullptr);
  return std::shared_ptr<float>(p, [](float* q) { std::free(q); });
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
                                 const std::function<float(int64_t, int64_t)>& value) {
  PackedWeight w;
  w.k_ = k;
  w.n_ = n;
  w.data_ = AlignedFloats(k * n);
  float* d = w.data_.get();
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < n; ++j) d[i * n + j] = value(i, j);
  return w;
}

PackedWeight PackedWeight::FromLinear(const float* src, int64_t ld, int64_t row0, int64_t col0,
                                      int64_t k, int64_t n) {
  PackedWeight w;
  w.k_ = k;
  w.n_ = n;
  w.data_ = AlignedFloats(k * n);
  float* d = w.data_.get();
  // Transpose in 32x32 blocks (cache friendly for the large FFN matrices).
  constexpr int64_t kB = 32;
  for (int64_t j0 = 0; j0 < n; j0 += kB)
    for (int64_t i0 = 0; i0 < k; i0 += kB)
      for (int64_t j = j0; j < std::min(n, j0 + kB); ++j) {
        const float* row = src + (row0 + j) * ld + col0;
        for (int64_t i = i0; i < std::min(k, i0 + kB); ++i) d[i * n + j] = row[i];
      }
  return w;
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

absl::Status DnnlContext::Matmul(const MatmulCall& c) {
  REFORMER_CHECK(c.m > 0 && c.k > 0 && c.n > 0);
  using dt = dnnl::memory::data_type;
  using md = dnnl::memory::desc;
  Key key{c.m, c.k, c.n, c.lda, c.b_stride_k, c.b_stride_n, c.ldc, c.bias != nullptr,
          static_cast<int>(c.post_op), c.post_alpha, c.accumulate};
  try {
    md src_md({c.m, c.k}, dt::f32, dnnl::memory::dims{c.lda, 1});
    md b_md({c.k, c.n}, dt::f32, dnnl::memory::dims{c.b_stride_k, c.b_stride_n});
    md dst_md({c.m, c.n}, dt::f32, dnnl::memory::dims{c.ldc, 1});
    md bias_md({1, c.n}, dt::f32, dnnl::memory::dims{c.n, 1});
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      dnnl::matmul::desc desc = c.bias ? dnnl::matmul::desc(src_md, b_md, bias_md, dst_md)
                                       : dnnl::matmul::desc(src_md, b_md, dst_md);
      dnnl::post_ops po;
      if (c.post_op != PostOp::kNone) po.append_eltwise(1.f, ToAlgorithm(c.post_op), c.post_alpha, 0.f);
      if (c.accumulate) po.append_sum(1.f);
      dnnl::primitive_attr attr;
      attr.set_post_ops(po);
      dnnl::matmul::primitive_desc pd(desc, attr, *engine_);
      it = cache_.emplace(key, std::make_unique<dnnl::matmul>(pd)).first;
    }
    dnnl::memory src_mem(src_md, *engine_, const_cast<float*>(c.src));
    dnnl::memory b_mem(b_md, *engine_, const_cast<float*>(c.b));
    dnnl::memory dst_mem(dst_md, *engine_, c.dst);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, dst_mem}};
    if (c.bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, *engine_, const_cast<float*>(c.bias)));
    it->second->execute(*stream_, args);
    stream_->wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul ", c.m, "x", c.k, "x", c.n,
                                            " failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace reformer
