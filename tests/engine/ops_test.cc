// Each op against a naive reference written straight from docs/engine-numerics.md (double or plain
// float loops). Tolerances are stated per test.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/dnnl/matmul.h"
#include "engine/ops/attention.h"
#include "engine/ops/layer_norm.h"
#include "engine/ops/lsh_hashing.h"
#include "engine/base/cpu_features.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/small_gemm.h"
#include "engine/ops/softmax.h"
#include "engine/tensor/workspace.h"
#include "gtest/gtest.h"

namespace reformer {
namespace {

std::vector<float> Randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// NaN anywhere (e.g. an output element never written) counts as an infinite difference.
float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.f : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const float d = std::abs(a[i] - b[i]);
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  }
  return m;
}

// Every kernel table this CPU can run (the selected one first): the kernel-level tests below
// check each of them in one process; the whole-model tests run once per level under
// REFORMER_MAX_ISA (tests/engine/CMakeLists.txt).
std::vector<const kernels::KernelTable*> Tables() {
  std::vector<const kernels::KernelTable*> t = {&kernels::Active()};
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kPortable})
    if (const kernels::KernelTable* k = kernels::ForIsa(isa); k != nullptr && k != t[0]) t.push_back(k);
  return t;
}

TEST(CpuDispatch, SelectsTheBestLevelUnderTheCap) {
  std::printf("CPU: %s; kernels in use: %s; levels tested here:", HostCpu().Summary().c_str(),
              IsaName(SelectedIsa()));
  for (const kernels::KernelTable* t : Tables()) std::printf(" %s", IsaName(t->isa));
  std::printf("\n");
  EXPECT_TRUE(IsaStatus().ok()) << IsaStatus();
  EXPECT_EQ(kernels::Active().isa, SelectedIsa());
  CpuFeatures v4;
  v4.sse42 = v4.popcnt = v4.x86_64_v3 = v4.x86_64_v4 = true;
  CpuFeatures v3 = v4;
  v3.x86_64_v4 = false;
  CpuFeatures v2 = v3;
  v2.x86_64_v3 = false;
  Isa isa;
  ASSERT_TRUE(ResolveIsa(v4, nullptr, &isa).ok());
  EXPECT_EQ(isa, Isa::kAvx512);
  ASSERT_TRUE(ResolveIsa(v4, "AVX2", &isa).ok());
  EXPECT_EQ(isa, Isa::kAvx2);
  ASSERT_TRUE(ResolveIsa(v4, "portable", &isa).ok());
  EXPECT_EQ(isa, Isa::kPortable);
  ASSERT_TRUE(ResolveIsa(v3, "avx512", &isa).ok());  // a cap never raises the level
  EXPECT_EQ(isa, Isa::kAvx2);
  ASSERT_TRUE(ResolveIsa(v2, "", &isa).ok());
  EXPECT_EQ(isa, Isa::kPortable);
  const absl::Status bad = ResolveIsa(v4, "sse9", &isa);
  EXPECT_TRUE(absl::IsInvalidArgument(bad)) << bad;
  EXPECT_NE(bad.message().find("REFORMER_MAX_ISA"), std::string::npos) << bad;
  // A level above the CPU's is never handed out.
  for (Isa l : {Isa::kAvx512, Isa::kAvx2, Isa::kPortable})
    EXPECT_EQ(kernels::ForIsa(l) != nullptr, static_cast<int>(l) <= static_cast<int>(BestIsa(HostCpu())));
}

TEST(KernelExp, MatchesStdExpWithin3UlpOnEveryLevel) {
  std::vector<float> x;
  for (float v = -87.f; v <= 88.f; v += 0.0137f) x.push_back(v);
  for (const kernels::KernelTable* t : Tables()) {
    std::vector<float> out(x.size());
    t->exp_shift_sum(x.data(), 0.f, out.data(), static_cast<int64_t>(x.size()));
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double ref = std::exp(static_cast<double>(x[i]));
      worst = std::max(worst, std::abs(out[i] - ref) / ref);
    }
    EXPECT_LT(worst, 3.6e-7) << IsaName(t->isa);  // ~3 ulp
    // exp(0) == 1 exactly (engine-numerics §9.2); MASK - max underflows to 0; tails of every
    // length.
    for (int64_t n = 1; n <= 37; ++n) {
      std::vector<float> zeros(n, 0.f), e(n, -1.f), masked(n, -1e9f);
      EXPECT_EQ(t->exp_shift_sum(zeros.data(), 0.f, e.data(), n), static_cast<float>(n)) << IsaName(t->isa);
      for (float v : e) EXPECT_EQ(v, 1.f) << IsaName(t->isa);
      EXPECT_EQ(t->exp_shift_sum(masked.data(), 0.f, e.data(), n), 0.f) << IsaName(t->isa);
    }
  }
}

TEST(KernelLayerNormAndArgmax, MatchNaiveOnEveryLevel) {
  const int64_t w0 = 77, w1 = 45;  // odd widths exercise the tails
  std::vector<float> x = Randn(w0 + w1, 41, 3.f), g = Randn(w0 + w1, 42), b = Randn(w0 + w1, 43);
  for (float& v : x) v += 5.f;
  double m = 0, var = 0;
  for (float v : x) m += v;
  m /= (w0 + w1);
  for (float v : x) var += (v - m) * (v - m);
  var /= (w0 + w1);
  for (const kernels::KernelTable* t : Tables()) {
    std::vector<float> y(w0 + w1);
    t->layer_norm_row(x.data(), w0, x.data() + w0, w1, g.data(), b.data(), 1e-12f, y.data());
    float worst = 0;
    for (int64_t j = 0; j < w0 + w1; ++j)
      worst = std::max(worst, static_cast<float>(std::abs((x[j] - m) / std::sqrt(var + 1e-12) * g[j] + b[j] - y[j])));
    EXPECT_LT(worst, 1e-5f) << IsaName(t->isa);
    for (int64_t half : {1, 3, 4, 16, 17, 32, 64, 100}) {
      for (uint32_t seed = 0; seed < 20; ++seed) {
        std::vector<float> r = Randn(half, 500 + seed);
        if (seed % 3 == 0) r[half / 2] = r[0];  // ties go to the lowest index
        std::vector<float> cat(r);
        for (float v : r) cat.push_back(-v);
        const int64_t want = std::max_element(cat.begin(), cat.end()) - cat.begin();
        EXPECT_EQ(t->argmax_signed(r.data(), half), want) << IsaName(t->isa) << " half " << half;
      }
    }
  }
}

TEST(LayerNorm, MatchesNaiveDouble) {
  const int64_t rows = 37, w = 77;  // odd width exercises the scalar tails
  std::vector<float> x = Randn(rows * w, 1, 3.f), g = Randn(w, 2), b = Randn(w, 3), y(rows * w);
  for (float& v : x) v += 5.f;
  LayerNormRows(x.data(), w, rows, w, g.data(), b.data(), 1e-12f, y.data(), w);
  float worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < w; ++j) m += x[r * w + j];
    m /= w;
    for (int64_t j = 0; j < w; ++j) v += (x[r * w + j] - m) * (x[r * w + j] - m);
    v /= w;
    for (int64_t j = 0; j < w; ++j) {
      const double ref = (x[r * w + j] - m) / std::sqrt(v + 1e-12) * g[j] + b[j];
      worst = std::max(worst, static_cast<float>(std::abs(ref - y[r * w + j])));
    }
  }
  EXPECT_LT(worst, 1e-5f);
}

TEST(LayerNorm, ConcatEqualsLayerNormOfConcatenation) {
  const int64_t rows = 9, h = 20;
  std::vector<float> a = Randn(rows * h, 4), z = Randn(rows * h, 5), g = Randn(2 * h, 6), b = Randn(2 * h, 7);
  std::vector<float> cat(rows * 2 * h), y1(rows * 2 * h), y2(rows * 2 * h);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < h; ++j) cat[r * 2 * h + j] = a[r * h + j], cat[r * 2 * h + h + j] = z[r * h + j];
  LayerNormRows(cat.data(), 2 * h, rows, 2 * h, g.data(), b.data(), 1e-12f, y1.data(), 2 * h);
  LayerNormConcatRows(a.data(), z.data(), h, rows, h, g.data(), b.data(), 1e-12f, y2.data(), 2 * h);
  EXPECT_LT(MaxAbsDiff(y1, y2), 1e-6f);
}

TEST(Softmax, LseFormMatchesNaive) {
  const int64_t rows = 5, cols = 67;
  std::vector<float> s = Randn(rows * cols, 8, 4.f), lse(rows), scratch(omp_get_max_threads() * cols);
  std::vector<float> orig = s;
  s[3] = kMaskValue;
  orig[3] = kMaskValue;
  LseSoftmaxRows(s.data(), rows, cols, cols, lse.data(), scratch.data());
  for (int64_t r = 0; r < rows; ++r) {
    double m = -1e30, sum = 0;
    for (int64_t j = 0; j < cols; ++j) m = std::max<double>(m, orig[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(orig[r * cols + j] - m);
    const double l = m + std::log(sum);
    EXPECT_NEAR(lse[r], l, 1e-5);
    for (int64_t j = 0; j < cols; ++j) EXPECT_NEAR(s[r * cols + j], std::exp(orig[r * cols + j] - l), 1e-6);
  }
  // engine-numerics §9.2: a fully masked row gives p = 1 everywhere.
  std::vector<float> masked(cols, kMaskValue);
  float l;
  LseSoftmaxRows(masked.data(), 1, cols, cols, &l, scratch.data());
  EXPECT_EQ(l, kMaskValue);
  for (float p : masked) EXPECT_EQ(p, 1.f);
}

TEST(LshHashing, BucketsMatchNaiveArgmax) {
  for (bool factorised : {false, true}) {
    BucketSpec spec;
    spec.factors = factorised ? std::vector<int64_t>{4, 8} : std::vector<int64_t>{16};
    spec.num_hashes = 3;
    spec.padding_bucket = true;
    const int64_t T = 40, half = spec.rotation_half(), nb = spec.total();
    std::vector<float> r = Randn(T * spec.num_hashes * half, 9);
    std::vector<uint8_t> mask(T, 1);
    mask[7] = mask[39] = 0;
    std::vector<int32_t> keys(spec.num_hashes * T);
    ComputeBucketKeys(r.data(), spec.num_hashes * half, 0, T, T, spec, mask.data(), keys.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < spec.num_hashes; ++n) {
        int64_t bucket = 0;
        if (!mask[t]) {
          bucket = nb;
        } else {
          int64_t off = 0, prod = 1;
          for (int64_t f : spec.factors) {
            std::vector<float> cat;
            for (int64_t j = 0; j < f / 2; ++j) cat.push_back(r[t * spec.num_hashes * half + n * half + off + j]);
            for (int64_t j = 0; j < f / 2; ++j) cat.push_back(-r[t * spec.num_hashes * half + n * half + off + j]);
            bucket += prod * (std::max_element(cat.begin(), cat.end()) - cat.begin());
            off += f / 2;
            prod *= f;
          }
        }
        EXPECT_EQ(keys[n * T + t], bucket + n * (nb + 1)) << "t=" << t << " n=" << n;
      }
  }
}

TEST(LshHashing, CountingSortIsStable) {
  std::mt19937 rng(10);
  std::vector<int32_t> keys(1000);
  for (auto& k : keys) k = static_cast<int32_t>(rng() % 17);
  std::vector<int32_t> perm(keys.size()), counts(18), ref(keys.size());
  StableSortByKey(keys.data(), keys.size(), 17, perm.data(), counts.data());
  std::iota(ref.begin(), ref.end(), 0);
  std::stable_sort(ref.begin(), ref.end(), [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
  EXPECT_EQ(perm, ref);
}

TEST(Matmul, PostOpsBiasAccumulateAndStridedB) {
  auto ctx = std::move(DnnlContext::Create()).value();
  const int64_t M = 48, K = 37, N = 29;
  std::vector<float> a = Randn(M * K, 11), w = Randn(N * K, 12), bias = Randn(N, 13);
  PackedWeight pw = PackedWeight::FromLinear(w.data(), K, 0, 0, K, N);
  struct Case { PostOp op; float alpha; double (*f)(double, double); };
  std::vector<Case> cases = {
      {PostOp::kNone, 0, [](double x, double) { return x; }},
      {PostOp::kRelu, 0, [](double x, double) { return x > 0 ? x : 0; }},
      {PostOp::kGeluErf, 0, [](double x, double) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }},
      {PostOp::kGeluTanh, 0,
       [](double x, double) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }},
      {PostOp::kSwish, 1.702f, [](double x, double al) { return x / (1 + std::exp(-al * x)); }},
      {PostOp::kTanh, 0, [](double x, double) { return std::tanh(x); }},
      {PostOp::kLogistic, 0, [](double x, double) { return 1 / (1 + std::exp(-x)); }},
      {PostOp::kMish, 0, [](double x, double) { return x * std::tanh(std::log1p(std::exp(x))); }},
  };
  for (const Case& cs : cases) {
    for (bool acc : {false, true}) {
      std::vector<float> dst(M * N, 0.5f);
      MatmulCall mc;
      mc.With(pw);
      mc.m = M;
      mc.src = a.data();
      mc.lda = K;
      mc.bias = bias.data();
      mc.dst = dst.data();
      mc.ldc = N;
      mc.post_op = cs.op;
      mc.post_alpha = cs.alpha;
      mc.accumulate = acc;
      ASSERT_TRUE(ctx->Matmul(mc).ok());
      float worst = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = bias[j];
          for (int64_t k = 0; k < K; ++k) s += static_cast<double>(a[i * K + k]) * w[j * K + k];
          const double ref = cs.f(s, cs.alpha) + (acc ? 0.5 : 0.0);
          worst = std::max(worst, static_cast<float>(std::abs(ref - dst[i * N + j])));
        }
      EXPECT_LT(worst, 2e-4f) << "post-op " << static_cast<int>(cs.op) << " acc " << acc;
    }
  }
  // Raw transposed B (as attention uses it): S = Q · Kᵀ with K row-major [N, K].
  std::vector<float> s(M * N);
  MatmulCall qk;
  qk.m = M;
  qk.k = K;
  qk.n = N;
  qk.src = a.data();
  qk.lda = K;
  qk.b = w.data();
  qk.b_stride_k = 1;
  qk.b_stride_n = K;
  qk.dst = s.data();
  qk.ldc = N;
  ASSERT_TRUE(ctx->Matmul(qk).ok());
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k) ref += static_cast<double>(a[i * K + k]) * w[j * K + k];
      ASSERT_NEAR(s[i * N + j], ref, 1e-4);
    }
}

// ---- Row-pointer kernels (small_gemm.h) against double references. ----
//
// Every row the kernels read sits at its own (permuted, unaligned) place in one pool and is
// followed by NaN: a kernel that reads past k (DotRows; also A's lda gap in GemmRowsOut) or n
// (GemmRowsOut's B rows) produces NaN. Outputs start as NaN, so a skipped element fails the value
// check; the cells around them hold kGuard, which a write outside the output must not change.
//
// Tolerance: any summation order of k float products (with or without FMA), plus the final scale
// multiplication, is within γ_{k+1} · Σ|terms| of the exact value (Higham, Accuracy and Stability,
// §3.1), γ_j = j·u/(1 - j·u), u = 2^-24. We allow twice (k + 2)·u·Σ|terms|; one dropped or doubled
// term is far larger than that for these random inputs.

constexpr float kGuard = -777.25f;

// `count` rows of `len` floats at shuffled, unaligned offsets of one pool, each followed by NaN.
struct RowPool {
  std::vector<float> pool;
  std::vector<float*> rows;
  RowPool(int64_t count, int64_t len, uint32_t seed) {
    std::mt19937 rng(seed);
    const int64_t stride = len + 3;  // 3 NaN after each row; rows start at varying alignments
    pool.assign(1 + count * stride, NAN);
    std::vector<int64_t> slot(count);
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), rng);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int64_t r = 0; r < count; ++r) {
      float* row = pool.data() + 1 + slot[r] * stride;
      for (int64_t p = 0; p < len; ++p) row[p] = nd(rng);
      rows.push_back(row);
    }
  }
  std::vector<const float*> Const() const { return {rows.begin(), rows.end()}; }
};

double ToleranceFor(int64_t k, double abs_sum) {
  return 2.0 * static_cast<double>(k + 2) * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

const std::vector<int64_t> kGemmM = {1, 2, 3, 4, 5, 7, 64, 65};
const std::vector<int64_t> kGemmN = {1, 3, 4, 5, 8, 15, 16, 17, 24, 64, 128, 130};
const std::vector<int64_t> kGemmK = {1, 7, 8, 9, 16, 63, 64, 65, 128};

TEST(SmallGemm, DotRowsMatchesDoubleReferenceForAllShapes) {
  int shapes = 0;
  for (const kernels::KernelTable* t : Tables())
  for (int64_t m : kGemmM)
    for (int64_t n : kGemmN)
      for (int64_t k : kGemmK) {
        const uint32_t seed = static_cast<uint32_t>(m * 100000 + n * 1000 + k);
        RowPool a(m, k, seed), b(n, k, seed + 1);
        const std::vector<const float*> ar = a.Const(), br = b.Const();
        const int64_t ldc = n + 5;
        // Row -1 and row m are guard rows; columns [n, ldc) of every row too.
        std::vector<float> cbuf((m + 2) * ldc, kGuard);
        float* c = cbuf.data() + ldc;
        for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, NAN);
        t->dot_rows(m, n, k, ar.data(), br.data(), c, ldc);
        int bad = 0;
        for (int64_t i = -1; i <= m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            const float got = c[i * ldc + j];
            if (i < 0 || i == m || j >= n) {
              if (!(got == kGuard) && bad++ == 0)
                ADD_FAILURE() << "m=" << m << " n=" << n << " k=" << k << ": wrote outside C at ("
                              << i << ", " << j << "): " << got;
              continue;
            }
            double ref = 0, abs_sum = 0;
            for (int64_t p = 0; p < k; ++p) {
              const double t = static_cast<double>(ar[i][p]) * br[j][p];
              ref += t;
              abs_sum += std::abs(t);
            }
            const double tol = ToleranceFor(k, abs_sum);
            if (!(std::abs(got - ref) <= tol) && bad++ == 0)
              ADD_FAILURE() << "m=" << m << " n=" << n << " k=" << k << ": C[" << i << "][" << j
                            << "] = " << got << ", reference " << ref << " (tolerance " << tol
                            << ")";
          }
        EXPECT_EQ(bad, 0) << IsaName(t->isa) << " m=" << m << " n=" << n << " k=" << k;
        ++shapes;
      }
  EXPECT_EQ(shapes, 8 * 12 * 9 * static_cast<int>(Tables().size()));
}

TEST(SmallGemm, GemmRowsOutMatchesDoubleReferenceForAllShapes) {
  std::mt19937 srng(77);
  std::uniform_real_distribution<float> scale_dist(0.05f, 3.f);
  for (const kernels::KernelTable* t : Tables())
  for (int64_t m : kGemmM)
    for (int64_t n : kGemmN)
      for (int64_t k : kGemmK) {
        const uint32_t seed = static_cast<uint32_t>(m * 100000 + n * 1000 + k + 7);
        // A [m, k] with lda = k + 3; the gap holds NaN (must not be read).
        const int64_t lda = k + 3;
        std::vector<float> a(m * lda, NAN);
        {
          std::vector<float> r = Randn(m * k, seed);
          for (int64_t i = 0; i < m; ++i) std::copy(&r[i * k], &r[i * k] + k, &a[i * lda]);
        }
        RowPool b(k, n, seed + 1);
        const std::vector<const float*> br = b.Const();
        // Scales of both signs and various magnitudes (one exactly 1, one exactly 0 when m > 2).
        std::vector<float> scale(m);
        for (int64_t i = 0; i < m; ++i) scale[i] = (i % 2 ? -1.f : 1.f) * scale_dist(srng);
        if (m > 1) scale[1] = 1.f;
        if (m > 2) scale[2] = 0.f;
        // Output rows: permuted slots of a pool, each slot [guard, n outputs, guard x 2].
        const int64_t stride = n + 3;
        std::vector<float> out(m * stride, kGuard);
        std::vector<int64_t> slot(m);
        std::iota(slot.begin(), slot.end(), 0);
        std::shuffle(slot.begin(), slot.end(), std::mt19937(seed + 2));
        std::vector<float*> cr(m);
        for (int64_t i = 0; i < m; ++i) {
          cr[i] = out.data() + slot[i] * stride + 1;
          std::fill(cr[i], cr[i] + n, NAN);
        }
        t->gemm_rows_out(m, n, k, a.data(), lda, br.data(), scale.data(), cr.data());
        int bad = 0;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double ref = 0, abs_sum = 0;
            for (int64_t p = 0; p < k; ++p) {
              const double t = static_cast<double>(a[i * lda + p]) * br[p][j];
              ref += t;
              abs_sum += std::abs(t);
            }
            ref *= scale[i];
            const double tol = ToleranceFor(k, abs_sum * std::abs(scale[i]));
            const float got = cr[i][j];
            if (!(std::abs(got - ref) <= tol) && bad++ == 0)
              ADD_FAILURE() << "m=" << m << " n=" << n << " k=" << k << ": row " << i << " col "
                            << j << " = " << got << ", reference " << ref << " (tolerance " << tol
                            << ")";
          }
        }
        for (int64_t s = 0; s < m; ++s) {
          const float* row = out.data() + s * stride;
          for (int64_t j : {int64_t{0}, n + 1, n + 2})
            if (!(row[j] == kGuard) && bad++ == 0)
              ADD_FAILURE() << "m=" << m << " n=" << n << " k=" << k << ": wrote outside the rows";
        }
        EXPECT_EQ(bad, 0) << IsaName(t->isa) << " m=" << m << " n=" << n << " k=" << k;
      }
}

// The keys' scaling moved into the packing (ops/attention.cc): every packed element is bitwise what
// scale_div gives for its row, with and without per-row multipliers, whole 8 x 8 tiles or not.
TEST(SmallGemm, PackTransposedScalesEachElementAsScaleDiv) {
  for (const kernels::KernelTable* t : Tables())
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{13}, int64_t{16}, int64_t{128}})
      for (int64_t k : {int64_t{1}, int64_t{9}, int64_t{64}, int64_t{67}})
        for (bool with_mul : {false, true}) {
          RowPool b(n, k, static_cast<uint32_t>(n * 1000 + k + with_mul));
          const std::vector<const float*> br = b.Const();
          std::vector<float> mul(n);
          for (int64_t j = 0; j < n; ++j) mul[j] = 0.37f + 0.11f * static_cast<float>(j % 5);
          const float div = 8.f + 1e-3f;
          const int64_t ldb = n + 3;
          std::vector<float> bt(k * ldb, kGuard), row(k);
          t->pack_transposed(n, k, br.data(), with_mul ? mul.data() : nullptr, div, bt.data(), ldb);
          int bad = 0;
          for (int64_t j = 0; j < n; ++j) {
            t->scale_div(br[j], k, with_mul ? mul[j] : 1.f, div, row.data());
            for (int64_t p = 0; p < k; ++p) bad += std::memcmp(&bt[p * ldb + j], &row[p], sizeof(float)) != 0;
          }
          for (int64_t p = 0; p < k; ++p)
            for (int64_t j = n; j < ldb; ++j) bad += !(bt[p * ldb + j] == kGuard);
          EXPECT_EQ(bad, 0) << IsaName(t->isa) << " n=" << n << " k=" << k << " mul=" << with_mul;
        }
}

// Scores through a packed Kᵀ: pack_transposed then gemm_arows equals A · Bᵀ (same tolerance).
TEST(SmallGemm, PackedTransposedProductMatchesDoubleReference) {
  for (const kernels::KernelTable* t : Tables())
    for (int64_t m : {int64_t{1}, int64_t{5}, int64_t{12}, int64_t{13}})
      for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{40}, int64_t{128}})
        for (int64_t k : {int64_t{1}, int64_t{9}, int64_t{64}}) {
          const uint32_t seed = static_cast<uint32_t>(m * 100000 + n * 1000 + k + 11);
          RowPool a(m, k, seed), b(n, k, seed + 1);
          const std::vector<const float*> ar = a.Const(), br = b.Const();
          const int64_t ldb = n + 2, ldc = n + 5;
          std::vector<float> bt(k * ldb, NAN), c(m * ldc, kGuard);
          t->pack_transposed(n, k, br.data(), nullptr, 1.f, bt.data(), ldb);
          t->gemm_arows(m, n, k, ar.data(), bt.data(), ldb, c.data(), ldc);
          int bad = 0;
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const float got = c[i * ldc + j];
              if (j >= n) {
                bad += !(got == kGuard);
                continue;
              }
              double ref = 0, abs_sum = 0;
              for (int64_t p = 0; p < k; ++p) {
                const double x = static_cast<double>(ar[i][p]) * br[j][p];
                ref += x;
                abs_sum += std::abs(x);
              }
              bad += !(std::abs(got - ref) <= ToleranceFor(k, abs_sum));
            }
          EXPECT_EQ(bad, 0) << IsaName(t->isa) << " m=" << m << " n=" << n << " k=" << k;
        }
}

// The tolerance above is not vacuous: dropping one product is caught.
TEST(SmallGemm, ToleranceDetectsOneMissingTerm) {
  int caught = 0, total = 0;
  for (int64_t k : kGemmK) {
    if (k == 1) continue;
    std::vector<float> x = Randn(k, 5 + k), y = Randn(k, 6 + k);
    double full = 0, abs_sum = 0;
    for (int64_t p = 0; p < k; ++p)
      full += double{x[p]} * y[p], abs_sum += std::abs(double{x[p]} * y[p]);
    for (int64_t skip = 0; skip < k; ++skip) {
      const double missing = full - double{x[skip]} * y[skip];
      caught += std::abs(missing - full) > ToleranceFor(k, abs_sum);
      ++total;
    }
  }
  EXPECT_GT(caught, total * 9 / 10);
}

// ---- Naive attention references (engine-numerics §7, §8), float scores, double softmax sums. ----

struct NaiveInput {
  int64_t T, dh;
  std::vector<float> qk, v;  // [T, dh]
  std::vector<uint8_t> mask;  // empty = none
};

void NaiveSoftmaxOut(std::vector<float>& s, const std::vector<const float*>& vals, int64_t dh, float* out,
                     float* lse_out) {
  float m = -INFINITY;
  for (float x : s) m = std::max(m, x);
  float sum = 0;
  for (float x : s) sum += std::exp(x - m);
  const float lse = m + std::log(sum);
  for (int64_t j = 0; j < dh; ++j) out[j] = 0;
  for (size_t u = 0; u < s.size(); ++u) {
    const float p = std::exp(s[u] - lse);
    for (int64_t j = 0; j < dh; ++j) out[j] += p * vals[u][j];
  }
  if (lse_out) *lse_out = lse;
}

std::vector<float> NaiveLsh(const NaiveInput& in, const LshAttentionParams& p, const std::vector<float>& rot,
                            std::vector<int32_t>* keys_out) {
  const int64_t T = in.T, dh = in.dh, c = p.chunk, nH = p.buckets.num_hashes;
  std::vector<float> kn(T * dh);
  for (int64_t t = 0; t < T; ++t) {
    float ss = 0;
    for (int64_t j = 0; j < dh; ++j) ss += in.qk[t * dh + j] * in.qk[t * dh + j];
    for (int64_t j = 0; j < dh; ++j)
      kn[t * dh + j] = in.qk[t * dh + j] / std::sqrt(ss / dh + 1e-6f) / std::sqrt(static_cast<float>(dh));
  }
  auto score = [&](int64_t qp, int64_t kp) {
    float s = 0;
    for (int64_t j = 0; j < dh; ++j) s += in.qk[qp * dh + j] * kn[kp * dh + j];
    if ((!in.mask.empty() && !in.mask[kp]) || (p.causal && kp > qp)) s = kMaskValue;
    if (kp == qp) s = kSelfMaskValue;
    return s;
  };
  std::vector<float> out(T * dh);
  if (T <= c) {
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> s;
      std::vector<const float*> vals;
      for (int64_t u = 0; u < T; ++u) s.push_back(score(t, u)), vals.push_back(&in.v[u * dh]);
      NaiveSoftmaxOut(s, vals, dh, &out[t * dh], nullptr);
    }
    return out;
  }
  const int64_t half = p.buckets.rotation_half();
  std::vector<int32_t> keys(nH * T);
  for (int64_t n = 0; n < nH; ++n)
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> r(half);
      for (int64_t i = 0; i < half; ++i) {
        float s = 0;
        for (int64_t j = 0; j < dh; ++j) s += in.qk[t * dh + j] * rot[j * nH * half + n * half + i];
        r[i] = s;
      }
      int64_t bucket = 0, off = 0, prod = 1;
      for (int64_t f : p.buckets.factors) {
        int64_t best = 0;
        float bv = -INFINITY;
        for (int64_t i = 0; i < f; ++i) {
          const float x = i < f / 2 ? r[off + i] : -r[off + i - f / 2];
          if (x > bv) bv = x, best = i;
        }
        bucket += prod * best;
        off += f / 2;
        prod *= f;
      }
      if (p.buckets.padding_bucket && !in.mask.empty() && !in.mask[t]) bucket = p.buckets.total();
      keys[n * T + t] = static_cast<int32_t>(bucket + n * p.buckets.num_keys_per_round());
    }
  if (keys_out) *keys_out = keys;
  std::vector<int32_t> perm(nH * T);
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
  const int64_t nchunks = nH * T / c;
  std::vector<float> o(nH * T * dh), lse(nH * T);
  for (int64_t s = 0; s < nH * T; ++s) {
    const int64_t j = s / c, qp = perm[s] % T;
    std::vector<float> sc;
    std::vector<const float*> vals;
    for (int64_t off = -p.before; off <= p.after; ++off) {
      const int64_t jj = ((j + off) % nchunks + nchunks) % nchunks;
      for (int64_t i = 0; i < c; ++i) {
        const int64_t kp = perm[jj * c + i] % T;
        sc.push_back(score(qp, kp));
        vals.push_back(&in.v[kp * dh]);
      }
    }
    NaiveSoftmaxOut(sc, vals, dh, &o[perm[s] * dh], &lse[perm[s]]);
  }
  for (int64_t t = 0; t < T; ++t) {
    float m = -INFINITY;
    for (int64_t n = 0; n < nH; ++n) m = std::max(m, lse[n * T + t]);
    float sum = 0;
    for (int64_t n = 0; n < nH; ++n) sum += std::exp(lse[n * T + t] - m);
    const float total = m + std::log(sum);
    for (int64_t n = 0; n < nH; ++n) {
      const float wgt = nH == 1 ? 1.f : std::exp(lse[n * T + t] - total);
      for (int64_t jd = 0; jd < dh; ++jd) out[t * dh + jd] += wgt * o[(n * T + t) * dh + jd];
    }
  }
  return out;
}

std::vector<float> NaiveLocal(const NaiveInput& in, const std::vector<float>& k, const LocalAttentionParams& p) {
  const int64_t T = in.T, dh = in.dh, c = p.chunk;
  const float sq = std::sqrt(static_cast<float>(dh));
  auto score = [&](int64_t qp, int64_t kp) {
    float s = 0;
    for (int64_t j = 0; j < dh; ++j) s += in.qk[qp * dh + j] * (k[kp * dh + j] / sq);
    if ((!in.mask.empty() && !in.mask[kp]) || (p.causal && kp > qp)) s = kMaskValue;
    return s;
  };
  std::vector<float> out(T * dh);
  const int64_t nchunks = T <= c ? 1 : T / c;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> sc;
    std::vector<const float*> vals;
    if (T <= c) {
      for (int64_t u = 0; u < T; ++u) sc.push_back(score(t, u)), vals.push_back(&in.v[u * dh]);
    } else {
      const int64_t j = t / c;
      for (int64_t off = -p.before; off <= p.after; ++off) {
        const int64_t jj = ((j + off) % nchunks + nchunks) % nchunks;
        for (int64_t i = 0; i < c; ++i) sc.push_back(score(t, jj * c + i)), vals.push_back(&in.v[(jj * c + i) * dh]);
      }
    }
    NaiveSoftmaxOut(sc, vals, dh, &out[t * dh], nullptr);
  }
  return out;
}

struct AttnCase {
  int64_t T, c, before, after, hashes;
  bool causal, masked, factorised;
};

void PrintTo(const AttnCase& ac, std::ostream* os) {
  *os << "{T " << ac.T << ", chunk " << ac.c << ", before " << ac.before << ", after " << ac.after
      << ", hashes " << ac.hashes << (ac.causal ? ", causal" : "") << (ac.masked ? ", masked" : "")
      << (ac.factorised ? ", factorised" : "") << "}";
}

// Head dims: 16 (the original case), 12 (not a multiple of 8: scalar tails of the QKᵀ kernel),
// 24 (a multiple of 8 but not of 16: the 8-column path of the PV kernel) and 64 (a typical head).
class AttentionTest : public ::testing::TestWithParam<std::tuple<AttnCase, int64_t>> {
 protected:
  // Float sums in different orders (blocked kernels vs naive loops). Observed worst case over
  // all cases and head dims: ~2e-6 (LSH keys are normalised, so scores do not grow with dh).
  static constexpr float kTolerance = 1e-5f;
};

TEST_P(AttentionTest, LshMatchesNaive) {
  const auto& [ac, dh] = GetParam();
  auto ctx = std::move(DnnlContext::Create()).value();
  Workspace ws;
  NaiveInput in{ac.T, dh, Randn(ac.T * dh, 20), Randn(ac.T * dh, 21), {}};
  if (ac.masked) {
    in.mask.assign(ac.T, 1);
    for (int64_t t = ac.T - ac.T / 5; t < ac.T; ++t) in.mask[t] = 0;
  }
  LshAttentionParams p;
  p.seq_len = ac.T;
  p.head_dim = dh;
  p.chunk = ac.c;
  p.before = ac.before;
  p.after = ac.after;
  p.causal = ac.causal;
  p.buckets.factors = ac.factorised ? std::vector<int64_t>{2, 4} : std::vector<int64_t>{8};
  p.buckets.num_hashes = ac.hashes;
  p.buckets.padding_bucket = ac.masked;
  std::vector<float> rot = Randn(dh * ac.hashes * p.buckets.rotation_half(), 22);
  // Output with a row stride wider than dh; the gap must stay untouched.
  const int64_t ld_out = dh + 3;
  std::vector<float> out(ac.T * ld_out, NAN);
  std::vector<int32_t> keys(ac.hashes * ac.T), ref_keys;
  ASSERT_TRUE(LshAttentionHead(ctx.get(), &ws, p, in.qk.data(), dh, in.v.data(), dh, rot.data(),
                               in.mask.empty() ? nullptr : in.mask.data(), out.data(), ld_out,
                               keys.data(), {})
                  .ok());
  std::vector<float> ref = NaiveLsh(in, p, rot, &ref_keys);
  std::vector<float> got(ac.T * dh);
  int gap_written = 0;
  for (int64_t t = 0; t < ac.T; ++t) {
    std::copy(&out[t * ld_out], &out[t * ld_out] + dh, &got[t * dh]);
    for (int64_t j = dh; j < ld_out; ++j) gap_written += !std::isnan(out[t * ld_out + j]);
  }
  EXPECT_EQ(gap_written, 0);
  // NaN (an unwritten element) fails.
  EXPECT_LT(MaxAbsDiff(got, ref), kTolerance);
  if (ac.T > ac.c) {
    EXPECT_EQ(keys, ref_keys);
  }
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.high_water(), LshAttentionWorkBytes(p, omp_get_max_threads()));
}

TEST_P(AttentionTest, LocalMatchesNaive) {
  const auto& [ac, dh] = GetParam();
  auto ctx = std::move(DnnlContext::Create()).value();
  Workspace ws;
  NaiveInput in{ac.T, dh, Randn(ac.T * dh, 30), Randn(ac.T * dh, 31), {}};
  std::vector<float> k = Randn(ac.T * dh, 32);
  if (ac.masked) {
    in.mask.assign(ac.T, 1);
    for (int64_t t = 0; t < ac.T / 3; ++t) in.mask[t] = 0;  // left padding: fully masked rows
  }
  LocalAttentionParams p;
  p.seq_len = ac.T;
  p.head_dim = dh;
  p.chunk = ac.c;
  p.before = ac.before;
  p.after = ac.after;
  p.causal = ac.causal;
  const int64_t ld_out = dh + 3;
  std::vector<float> out(ac.T * ld_out, NAN);
  ASSERT_TRUE(LocalAttentionHead(ctx.get(), &ws, p, in.qk.data(), dh, k.data(), dh, in.v.data(), dh,
                                 in.mask.empty() ? nullptr : in.mask.data(), out.data(), ld_out, {})
                  .ok());
  std::vector<float> ref = NaiveLocal(in, k, p);
  // Fully masked rows sum their window's values (engine-numerics §9.2): compare relative to
  // magnitude.
  float worst = 0;
  int gap_written = 0;
  for (int64_t t = 0; t < ac.T; ++t) {
    for (int64_t j = 0; j < dh; ++j) {
      const float o = out[t * ld_out + j], r = ref[t * dh + j];
      const float d = std::abs(o - r) / std::max(1.f, std::abs(r));
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    }
    for (int64_t j = dh; j < ld_out; ++j) gap_written += !std::isnan(out[t * ld_out + j]);
  }
  EXPECT_EQ(gap_written, 0);
  EXPECT_LT(worst, kTolerance);
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.high_water(), LocalAttentionWorkBytes(p, omp_get_max_threads()));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionTest,
    ::testing::Combine(::testing::Values(AttnCase{128, 16, 1, 0, 1, true, false, false},
                                         AttnCase{128, 16, 1, 0, 3, true, true, true},
                                         AttnCase{96, 32, 1, 1, 2, false, true, false},
                                         AttnCase{64, 16, 2, 0, 2, true, false, true},
                                         AttnCase{24, 32, 1, 0, 2, true, true, false},
                                         AttnCase{32, 32, 1, 0, 4, false, false, false},
                                         AttnCase{160, 32, 0, 1, 4, false, true, true},
                                         AttnCase{256, 32, 1, 0, 100, true, false, false}),  // > 64 rounds
                       ::testing::Values(int64_t{16}, int64_t{12}, int64_t{24}, int64_t{64})),
    [](const ::testing::TestParamInfo<std::tuple<AttnCase, int64_t>>& info) {
      const AttnCase& ac = std::get<0>(info.param);
      return "T" + std::to_string(ac.T) + "c" + std::to_string(ac.c) + "b" +
             std::to_string(ac.before) + "a" + std::to_string(ac.after) + "h" +
             std::to_string(ac.hashes) + (ac.causal ? "Causal" : "") + (ac.masked ? "Masked" : "") +
             (ac.factorised ? "Fact" : "") + "_dh" + std::to_string(std::get<1>(info.param));
    });

}  // namespace
}  // namespace reformer
