// RowGemm: converts the rows of a for the weights' compute type, splits the columns among the
// threads, and runs the dispatched kernel (kernels_impl.inc, "RowGemm of the decoding step").
#include "engine/ops/row_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/ops/kernels/kernel_table.h"

namespace reformer {
namespace {

using kernels::RowPostOp;
using kernels::WeightType;

static_assert(static_cast<int>(RowPostOp::kNone) == static_cast<int>(PostOp::kNone) &&
                  static_cast<int>(RowPostOp::kRelu) == static_cast<int>(PostOp::kRelu) &&
                  static_cast<int>(RowPostOp::kGeluErf) == static_cast<int>(PostOp::kGeluErf) &&
                  static_cast<int>(RowPostOp::kGeluTanh) == static_cast<int>(PostOp::kGeluTanh) &&
                  static_cast<int>(RowPostOp::kSwish) == static_cast<int>(PostOp::kSwish) &&
                  static_cast<int>(RowPostOp::kTanh) == static_cast<int>(PostOp::kTanh) &&
                  static_cast<int>(RowPostOp::kLogistic) == static_cast<int>(PostOp::kLogistic) &&
                  static_cast<int>(RowPostOp::kMish) == static_cast<int>(PostOp::kMish),
              "kernels::RowPostOp mirrors PostOp");

// Threads split the columns in multiples of this (a whole number of vectors at every level).
constexpr int64_t kColumnAlign = 64;

// The kernel's arguments for rows of `a` already converted to the weights' type (`a`, `lda`,
// `row_scale`).
kernels::RowGemmArgs Args(const RowGemmCall& g, const float* a, int64_t lda, const float* row_scale) {
  kernels::RowGemmArgs r;
  r.m = g.m;
  r.n = g.n;
  r.k = g.k;
  r.a = a;
  r.lda = lda;
  r.ldb = g.ldb;
  r.b = g.b;
  r.b_type = WeightType::kF32;
  if (g.packed != nullptr && g.packed->type() != ComputeType::kFloat32) {
    r.b = g.packed->raw();
    r.b_type = g.packed->type() == ComputeType::kBFloat16 ? WeightType::kBf16 : WeightType::kS8;
    r.col_scale = g.packed->scales();
  }
  r.row_scale = row_scale;
  r.bias = g.bias;
  r.c = g.c;
  r.ldc = g.ldc;
  r.post_op = static_cast<RowPostOp>(g.post_op);
  r.post_alpha = g.post_alpha;
  r.accumulate = g.accumulate;
  return r;
}

// Columns [c0, c1) of the product.
void RunColumns(kernels::RowGemmArgs args, int64_t c0, int64_t c1) {
  if (c1 <= c0) return;
  const size_t elem = args.b_type == WeightType::kF32 ? 4 : args.b_type == WeightType::kBf16 ? 2 : 1;
  args.n = c1 - c0;
  args.b = static_cast<const char*>(args.b) + elem * c0;
  if (args.col_scale != nullptr) args.col_scale += c0;
  if (args.bias != nullptr) args.bias += c0;
  args.c += c0;
  kernels::Active().row_gemm(args);
}

}  // namespace

float ApplyPostOp(PostOp op, float alpha, float x) {
  switch (op) {
    case PostOp::kNone: return x;
    case PostOp::kRelu: return x > 0.f ? x : 0.f;
    case PostOp::kGeluErf: return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
    case PostOp::kGeluTanh: {
      const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.f + std::tanh(u));
    }
    case PostOp::kSwish: return x / (1.f + std::exp(-alpha * x));
    case PostOp::kTanh: return std::tanh(x);
    case PostOp::kLogistic: return 1.f / (1.f + std::exp(-x));
    case PostOp::kMish: return x * std::tanh(std::log1p(std::exp(x)));
  }
  return x;
}

void RowGemm(const RowGemmCall& g) {
  if (g.m <= 0 || g.n <= 0) return;
  const kernels::KernelTable& kt = kernels::Active();
  const ComputeType type = g.packed != nullptr ? g.packed->type() : ComputeType::kFloat32;
  const float* a = g.a;
  int64_t lda = g.lda;
  const float* row_scale = nullptr;
  std::vector<float> own;
  if (type != ComputeType::kFloat32) {
    // The rows as the forward's matmuls see them (engine/dnnl/matmul.cc): bf16-rounded, or
    // quantized to integers in [-127, 127] with one scale per row (kept as floats: exact).
    float* s = g.scratch;
    if (s == nullptr) {
      own.resize(RowGemmScratchFloats(g.m, g.k));
      s = own.data();
    }
    std::vector<uint16_t> bf;
    std::vector<int8_t> q;
    for (int64_t r = 0; r < g.m; ++r) {
      const float* src = g.a + r * g.lda;
      float* dst = s + r * g.k;
      if (type == ComputeType::kBFloat16) {
        uint16_t* h = reinterpret_cast<uint16_t*>(dst);  // rounded in place: bits, then widened
        kt.to_bf16(src, g.k, h);
        for (int64_t p = g.k - 1; p >= 0; --p) {
          const uint32_t bits = static_cast<uint32_t>(h[p]) << 16;
          std::memcpy(dst + p, &bits, 4);
        }
      } else {
        int8_t* qd = reinterpret_cast<int8_t*>(dst);
        s[g.m * g.k + r] = kt.quantize_s8(src, g.k, qd);
        for (int64_t p = g.k - 1; p >= 0; --p) dst[p] = static_cast<float>(qd[p]);
      }
    }
    a = s;
    lda = g.k;
    if (type == ComputeType::kInt8) row_scale = s + g.m * g.k;
  }
  const kernels::RowGemmArgs args = Args(g, a, lda, row_scale);
  const int64_t c0 = g.col_begin, c1 = g.col_end > 0 ? g.col_end : g.n;
  // Below ~1M multiply-adds (tens of microseconds) waking the team costs more than it saves.
  const bool parallel = g.parallel && g.m * (c1 - c0) * g.k >= (int64_t{1} << 20) && c1 - c0 > kColumnAlign;
  if (!parallel) return RunColumns(args, c0, c1);
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t blocks = (c1 - c0 + kColumnAlign - 1) / kColumnAlign;
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    RunColumns(args, c0 + b0 * kColumnAlign, std::min(c1, c0 + b1 * kColumnAlign));
  }
}

}  // namespace reformer
