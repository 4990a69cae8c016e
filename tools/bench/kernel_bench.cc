// kernel_bench: A/B of each hand-written kernel (engine/ops/kernels, every level this CPU runs)
// against oneDNN's equivalent primitive, single-threaded (an attention block runs on one
// OpenMP thread), at the shapes the published models use. Times are the minimum over repeats
// (robust on a loaded machine); "x oneDNN" > 1 means the hand-written kernel is faster.
//
//   kernel_bench [--repeats 7]
//   ONEDNN_MAX_CPU_ISA=AVX2 kernel_bench   (oneDNN as on an AVX2-only machine)
//
// The oneDNN side reads contiguous operands (its best case: the engine's kernels read rows
// through pointers and would need gather copies before a oneDNN call).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/base/cpu_features.h"
#include "engine/dnnl/matmul.h"
#include "engine/ops/kernels/kernel_table.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using reformer::kernels::KernelTable;

int g_repeats = 7;

// Minimum seconds per call of f over g_repeats batches of `calls` calls.
double MinSeconds(int calls, const std::function<void()>& f) {
  double best = 1e30;
  for (int r = 0; r < g_repeats; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < calls; ++i) f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / calls);
  }
  return best;
}

std::vector<float> Rand(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

std::vector<const KernelTable*> Tables() {
  std::vector<const KernelTable*> t;
  for (reformer::Isa isa : {reformer::Isa::kAvx512, reformer::Isa::kAvx2, reformer::Isa::kPortable})
    if (const KernelTable* k = reformer::kernels::ForIsa(isa)) t.push_back(k);
  return t;
}

void Row(const char* kernel, const char* shape, const char* variant, double seconds, double work, const char* unit,
         double dnnl_seconds) {
  std::printf("| %s | %s | %s | %.2f | %.1f %s | %.2f |\n", kernel, shape, variant, seconds * 1e6, work / seconds / 1e9,
              unit, dnnl_seconds / seconds);
}

struct Shape {
  const char* name;
  int64_t rows, keys, dh;
};

// Scores S = Q Kᵀ and outputs O = P V of one attention block.
void AttentionProducts(const Shape& sh, reformer::DnnlContext* ctx) {
  const int64_t m = sh.rows, n = sh.keys, k = sh.dh;
  std::vector<float> q = Rand(m * k, 1), kk = Rand(n * k, 2), v = Rand(n * k, 3), p = Rand(m * n, 4);
  std::vector<float> s(m * n), o(m * k), kt(k * n);
  std::vector<const float*> qr(m), kr(n), vr(n);
  std::vector<float*> orows(m);
  for (int64_t i = 0; i < m; ++i) qr[i] = q.data() + i * k, orows[i] = o.data() + i * k;
  for (int64_t j = 0; j < n; ++j) kr[j] = kk.data() + j * k, vr[j] = v.data() + j * k;
  reformer::MatmulCall qk;  // S = Q · Kᵀ (K row-major [n, k] read as B[k][n] with strides)
  qk.m = m, qk.k = k, qk.n = n, qk.src = q.data(), qk.lda = k, qk.b = kk.data(), qk.b_stride_k = 1,
  qk.b_stride_n = k, qk.dst = s.data(), qk.ldc = n;
  reformer::MatmulCall pv;  // O = P · V
  pv.m = m, pv.k = n, pv.n = k, pv.src = p.data(), pv.lda = n, pv.b = v.data(), pv.b_stride_k = k,
  pv.b_stride_n = 1, pv.dst = o.data(), pv.ldc = k;
  const int calls = std::max<int>(1, static_cast<int>(2e8 / (m * n * k)));
  const double flop = 2.0 * m * n * k;
  const double d_qk = MinSeconds(calls, [&] { (void)ctx->Matmul(qk); });
  const double d_pv = MinSeconds(calls, [&] { (void)ctx->Matmul(pv); });
  Row("QKᵀ scores", sh.name, "oneDNN matmul", d_qk, flop, "GFLOP/s", d_qk);
  for (const KernelTable* t : Tables()) {
    const std::string a = std::string(reformer::IsaName(t->isa)) + " dot_rows (12-row groups)";
    const double s1 = MinSeconds(calls, [&] {
      for (int64_t i = 0; i < m; i += 12) t->dot_rows(std::min<int64_t>(12, m - i), n, k, qr.data() + i, kr.data(),
                                                     s.data() + i * n, n);
    });
    Row("QKᵀ scores", sh.name, a.c_str(), s1, flop, "GFLOP/s", d_qk);
    const std::string b = std::string(reformer::IsaName(t->isa)) + " pack Kᵀ + gemm_arows";
    const double s2 = MinSeconds(calls, [&] {
      t->pack_transposed(n, k, kr.data(), nullptr, 8.f, kt.data(), n);
      for (int64_t i = 0; i < m; i += 12)
        t->gemm_arows(std::min<int64_t>(12, m - i), n, k, qr.data() + i, kt.data(), n, s.data() + i * n, n);
    });
    Row("QKᵀ scores", sh.name, b.c_str(), s2, flop, "GFLOP/s", d_qk);
  }
  Row("P·V outputs", sh.name, "oneDNN matmul", d_pv, flop, "GFLOP/s", d_pv);
  for (const KernelTable* t : Tables()) {
    const std::string a = std::string(reformer::IsaName(t->isa)) + " gemm_rows_out";
    const double s1 = MinSeconds(calls, [&] {
      for (int64_t i = 0; i < m; i += 12)
        t->gemm_rows_out(std::min<int64_t>(12, m - i), k, n, p.data() + i * n, n, vr.data(), nullptr, orows.data() + i);
    });
    Row("P·V outputs", sh.name, a.c_str(), s1, flop, "GFLOP/s", d_pv);
  }
}

// LSH hash projections r = qk · R for 64 rows (engine-numerics §7.3).
void HashProjection(const char* name, int64_t dh, int64_t width, reformer::DnnlContext* ctx) {
  const int64_t m = 64;
  std::vector<float> a = Rand(m * dh, 5), r = Rand(dh * width, 6), c(m * width);
  reformer::MatmulCall mc;
  mc.m = m, mc.k = dh, mc.n = width, mc.src = a.data(), mc.lda = dh, mc.b = r.data(), mc.b_stride_k = width,
  mc.b_stride_n = 1, mc.dst = c.data(), mc.ldc = width;
  const int calls = std::max<int>(1, static_cast<int>(1e8 / (m * dh * width)));
  const double flop = 2.0 * m * dh * width;
  const double d = MinSeconds(calls, [&] { (void)ctx->Matmul(mc); });
  Row("hash projection", name, "oneDNN matmul", d, flop, "GFLOP/s", d);
  for (const KernelTable* t : Tables()) {
    const std::string v = std::string(reformer::IsaName(t->isa)) + " small_gemm";
    Row("hash projection", name, v.c_str(),
        MinSeconds(calls, [&] { t->small_gemm(m, width, dh, a.data(), dh, r.data(), width, c.data(), width); }), flop,
        "GFLOP/s", d);
  }
}

// LayerNorm of [rows, h] rows, and the masked softmax of [rows, keys] score rows.
void RowOps(const char* name, int64_t rows, int64_t h, int64_t keys, const dnnl::engine& eng, dnnl::stream& strm) {
  using dt = dnnl::memory::data_type;
  std::vector<float> x = Rand(rows * h, 7), y(rows * h), g(h, 1.f), b(h, 0.f), sc(2 * h);
  for (int64_t j = 0; j < h; ++j) sc[j] = 1.f, sc[h + j] = 0.f;
  dnnl::memory::desc md({rows, h}, dt::f32, dnnl::memory::format_tag::ab);
  dnnl::layer_normalization_forward::desc ld(dnnl::prop_kind::forward_inference, md, 1e-12f,
                                             dnnl::normalization_flags::use_scale_shift);
  dnnl::layer_normalization_forward ln(dnnl::layer_normalization_forward::primitive_desc(ld, eng));
  dnnl::memory xm(md, eng, x.data()), ym(md, eng, y.data());
  dnnl::memory ssm({{2, h}, dt::f32, dnnl::memory::format_tag::ab}, eng, sc.data());
  const double bytes = 2.0 * rows * h * sizeof(float);
  const double d = MinSeconds(5, [&] {
    ln.execute(strm, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DST, ym}, {DNNL_ARG_SCALE_SHIFT, ssm}});
    strm.wait();
  });
  Row("LayerNorm", name, "oneDNN layer_normalization", d, bytes, "GB/s", d);
  for (const KernelTable* t : Tables()) {
    const std::string v = std::string(reformer::IsaName(t->isa)) + " layer_norm_row";
    Row("LayerNorm", name, v.c_str(), MinSeconds(5, [&] {
          for (int64_t r = 0; r < rows; ++r) t->layer_norm_row(x.data() + r * h, h, nullptr, 0, g.data(), b.data(),
                                                               1e-12f, y.data() + r * h);
        }), bytes, "GB/s", d);
  }
  const int64_t sr = 256;
  std::vector<float> s0 = Rand(sr * keys, 8), s(sr * keys), lse(sr), scale(sr);
  std::vector<int32_t> kpos(keys), kvalid(keys, -1);
  for (int64_t j = 0; j < keys; ++j) kpos[j] = static_cast<int32_t>(j);
  dnnl::memory::desc smd({sr, keys}, dt::f32, dnnl::memory::format_tag::ab);
  dnnl::softmax_forward sm(dnnl::softmax_forward::primitive_desc(
      dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, smd, 1), eng));
  dnnl::memory s0m(smd, eng, s0.data()), sm_out(smd, eng, s.data());
  const double sbytes = 2.0 * sr * keys * sizeof(float);
  const double ds = MinSeconds(20, [&] {
    sm.execute(strm, {{DNNL_ARG_SRC, s0m}, {DNNL_ARG_DST, sm_out}});
    strm.wait();
  });
  const std::string sname = std::string(name) + ", 256 x " + std::to_string(keys);
  Row("softmax (masked, lse)", sname.c_str(), "oneDNN softmax (no mask)", ds, sbytes, "GB/s", ds);
  for (const KernelTable* t : Tables()) {
    const std::string v = std::string(reformer::IsaName(t->isa)) + " masked_softmax_row";
    Row("softmax (masked, lse)", sname.c_str(), v.c_str(), MinSeconds(20, [&] {
          std::memcpy(s.data(), s0.data(), sizeof(float) * s.size());
          for (int64_t r = 0; r < sr; ++r)
            t->masked_softmax_row(s.data() + r * keys, keys, static_cast<int32_t>(keys / 2), kpos.data(), kvalid.data(),
                                  true, true, &lse[r], &scale[r]);
        }), sbytes, "GB/s", ds);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2)
    if (!std::strcmp(argv[i], "--repeats")) g_repeats = std::max(1, std::atoi(argv[i + 1]));
  omp_set_num_threads(1);
  auto ctx = reformer::DnnlContext::Create();
  if (!ctx.ok()) return 1;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  std::printf("CPU: %s; oneDNN %s%s; 1 thread; minimum of %d repeats\n\n", reformer::HostCpu().Summary().c_str(),
              reformer::DnnlCpuIsaName(),
              std::getenv("ONEDNN_MAX_CPU_ISA") ? (std::string(" (ONEDNN_MAX_CPU_ISA=") +
                                                   std::getenv("ONEDNN_MAX_CPU_ISA") + ")").c_str()
                                                : "",
              g_repeats);
  std::printf("| kernel | shape | variant | µs per call | rate | x oneDNN |\n|---|---|---|---|---|---|\n");
  for (const Shape& sh : {Shape{"cp chunk 64: 64 x 128 keys, dh 64", 64, 128, 64},
                          Shape{"enwik8 local: 128 x 256 keys, dh 128", 128, 256, 128},
                          Shape{"enwik8 LSH: 256 x 512 keys, dh 128", 256, 512, 128}})
    AttentionProducts(sh, ctx->get());
  HashProjection("cp: dh 64 -> 96 (buckets [64,128])", 64, 96, ctx->get());
  HashProjection("enwik8: dh 128 -> 4 x 256", 128, 1024, ctx->get());
  RowOps("cp: 4096 x 256", 4096, 256, 128, eng, strm);
  RowOps("enwik8: 4096 x 1024", 4096, 1024, 512, eng, strm);
  return 0;
}
