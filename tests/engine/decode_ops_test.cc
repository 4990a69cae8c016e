// The decoding step's ops against naive references: RowGemm (bitwise row independence for every
// row count, position and thread count; values, bias, activations, accumulation, tails; weights
// in float32, bfloat16 and int8, the int8 sums exact; every kernel level in this process),
// LshRoundOrder (slots and windows against a full std::stable_sort at every insertion, including
// windows longer than the sequence and negative starts), AttendOneQuery and CombineRounds.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "engine/base/cpu_features.h"
#include "engine/ops/cached_attention.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/lsh_round_order.h"
#include "engine/ops/row_gemm.h"
#include "gtest/gtest.h"

namespace reformer {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

float Bf16Round(float x) {
  uint16_t h;
  kernels::Active().to_bf16(&x, 1, &h);
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float y;
  std::memcpy(&y, &bits, 4);
  return y;
}

// The int8 reference: each row quantized as engine/dnnl/matmul.cc quantizes it, the exact integer
// sum, then RowGemm's dequantization formula (kernel_table.h): bitwise what RowGemm must give.
std::vector<float> Int8Reference(const RowGemmCall& g, const PackedWeight& w) {
  std::vector<float> out(g.m * g.n);
  std::vector<int8_t> q(g.k);
  const int8_t* b = static_cast<const int8_t*>(w.raw());
  for (int64_t r = 0; r < g.m; ++r) {
    const float rs = kernels::Active().quantize_s8(g.a + r * g.lda, g.k, q.data());
    for (int64_t j = 0; j < g.n; ++j) {
      int64_t acc = 0;
      for (int64_t p = 0; p < g.k; ++p) acc += int64_t{q[p]} * b[p * g.n + j];
      float v = static_cast<float>(static_cast<int32_t>(acc)) * (rs * w.scales()[j]);
      if (g.bias) v += g.bias[j];
      v = ApplyPostOp(g.post_op, g.post_alpha, v);
      out[r * g.n + j] = g.accumulate ? g.c[r * g.ldc + j] + v : v;
    }
  }
  return out;
}

// Row 0 of `a` alone, then as row r of calls of m rows on 1 or 2 threads: bitwise the same.
void ExpectRowInvariance(RowGemmCall g, const std::vector<float>& a, const std::vector<float>& init,
                         const std::vector<float>& single, int64_t max_m) {
  for (int threads : {1, 2})
    for (int64_t m : {int64_t{2}, int64_t{5}, int64_t{6}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{13}, int64_t{16}, int64_t{17}, max_m})
      for (int64_t r : {int64_t{0}, m / 2, m - 1}) {
        omp_set_num_threads(threads);
        std::vector<float> rows(a.begin(), a.begin() + m * g.k);
        std::copy(a.begin(), a.begin() + g.k, rows.begin() + r * g.k);
        std::vector<float> c(init.begin(), init.begin() + m * g.n);
        std::memcpy(c.data() + r * g.n, init.data(), sizeof(float) * g.n);
        g.m = m;
        g.a = rows.data();
        g.c = c.data();
        RowGemm(g);
        ASSERT_EQ(std::memcmp(c.data() + r * g.n, single.data(), sizeof(float) * g.n), 0)
            << "k " << g.k << " n " << g.n << " m " << m << " row " << r << " threads " << threads;
      }
  omp_set_num_threads(2);
}

TEST(RowGemmTest, EveryRowIsBitwiseIndependentOfTheOthers) {
  for (ComputeType type : {ComputeType::kFloat32, ComputeType::kBFloat16, ComputeType::kInt8})
    for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{{7, 5}, {33, 70}, {128, 258}, {64, 1100}}) {
      const int64_t max_m = 40;
      const std::vector<float> a = Random(max_m * k, 1), b = Random(k * n, 2), bias = Random(n, 3);
      const PackedWeight w = PackedWeight::Build(k, n, [&](int64_t p, int64_t j) { return b[p * n + j]; }, type);
      std::vector<float> single(n);
      for (PostOp op : {PostOp::kNone, PostOp::kRelu, PostOp::kGeluErf}) {
        for (bool acc : {false, true}) {
          RowGemmCall g;
          g.With(w);
          g.lda = k;
          g.bias = bias.data();
          g.ldc = n;
          g.post_op = op;
          g.accumulate = acc;
          const std::vector<float> init = Random(max_m * n, 4);
          g.m = 1;
          g.a = a.data();
          std::memcpy(single.data(), init.data(), sizeof(float) * n);
          g.c = single.data();
          if (type == ComputeType::kInt8) {
            const std::vector<float> want = Int8Reference(g, w);
            RowGemm(g);
            ASSERT_EQ(std::memcmp(single.data(), want.data(), sizeof(float) * n), 0) << "int8 k " << k << " n " << n;
          } else {
            RowGemm(g);
            // The values: a naive double product (of the bf16-rounded operands for bfloat16).
            const bool bf = type == ComputeType::kBFloat16;
            for (int64_t j = 0; j < n; ++j) {
              double s = 0;
              for (int64_t p = 0; p < k; ++p)
                s += static_cast<double>(bf ? Bf16Round(a[p]) : a[p]) * (bf ? Bf16Round(b[p * n + j]) : b[p * n + j]);
              float v = ApplyPostOp(op, 0.f, static_cast<float>(s + bias[j]));
              if (acc) v += init[j];
              ASSERT_NEAR(single[j], v, 1e-4 * (1 + std::abs(v))) << j;
            }
          }
          ExpectRowInvariance(g, a, init, single, max_m);
        }
      }
    }
}

// int8 sums beyond 2^24 (k = 2500 products of +-127 x +-127): exact integers all the same.
TEST(RowGemmTest, Int8SumsAreExactIntegersForLongRows) {
  const int64_t k = 2500, n = 37, m = 3;
  std::vector<float> a(m * k), b(k * n);
  std::mt19937 rng(9);
  for (float& x : a) x = rng() % 8 == 0 ? -1.f : 1.f;  // quantizes to +-127
  for (int64_t p = 0; p < k; ++p)
    for (int64_t j = 0; j < n; ++j) b[p * n + j] = (j % 3 == 0 || rng() % 5 != 0) ? 2.f : -2.f;
  const PackedWeight w =
      PackedWeight::Build(k, n, [&](int64_t p, int64_t j) { return b[p * n + j]; }, ComputeType::kInt8);
  std::vector<float> c(m * n);
  RowGemmCall g;
  g.With(w);
  g.m = m;
  g.a = a.data();
  g.lda = k;
  g.c = c.data();
  g.ldc = n;
  const std::vector<float> want = Int8Reference(g, w);
  RowGemm(g);
  EXPECT_EQ(std::memcmp(c.data(), want.data(), sizeof(float) * m * n), 0);
  // Row 0 against column 0 (all +127): sum = 127 * 127 * (#+1 - #-1) in a, beyond 2^24.
  int64_t plus = 0;
  for (int64_t p = 0; p < k; ++p) plus += a[p] > 0 ? 1 : -1;
  EXPECT_GT(std::abs(plus) * 127 * 127, int64_t{1} << 24);
  EXPECT_EQ(c[0], static_cast<float>(plus * 127 * 127) * ((1.f / 127.f) * (2.f / 127.f)));
  // The forward's int8 matmul (oneDNN, exact s32 sums) gives the same bits, where it runs.
  if (DnnlSupports(ComputeType::kInt8).ok()) {
    auto ctx = DnnlContext::Create();
    ASSERT_TRUE(ctx.ok());
    std::vector<float> d(m * n);
    MatmulCall mc;
    mc.With(w);
    mc.m = m;
    mc.src = a.data();
    mc.lda = k;
    mc.dst = d.data();
    mc.ldc = n;
    ASSERT_TRUE((*ctx)->Matmul(mc).ok());
    EXPECT_EQ(std::memcmp(c.data(), d.data(), sizeof(float) * m * n), 0);
    std::printf("int8 RowGemm bitwise equal to oneDNN's int8 matmul (%s)\n", DnnlCpuIsaName());
  } else {
    std::printf("oneDNN runs no int8 matmul here (%s): compared with the exact reference only\n", DnnlCpuIsaName());
  }
}

// Every kernel level this CPU runs, in one process: each row bitwise independent of the others,
// and the levels agree to rounding.
TEST(RowGemmTest, EveryLevelIsRowInvariantAndTheLevelsAgree) {
  const int64_t k = 96, n = 200, m = 11;
  const std::vector<float> a = Random(m * k, 5), b = Random(k * n, 6), bias = Random(n, 7);
  std::vector<float> first;
  int levels = 0;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kPortable}) {
    const kernels::KernelTable* kt = kernels::ForIsa(isa);
    if (kt == nullptr) continue;
    ++levels;
    kernels::RowGemmArgs g;
    g.n = n;
    g.k = k;
    g.lda = k;
    g.b = b.data();
    g.ldb = n;
    g.bias = bias.data();
    g.ldc = n;
    g.post_op = kernels::RowPostOp::kGeluTanh;
    std::vector<float> all(m * n), one(n);
    g.m = m;
    g.a = a.data();
    g.c = all.data();
    kt->row_gemm(g);
    for (int64_t r = 0; r < m; ++r) {
      g.m = 1;
      g.a = a.data() + r * k;
      g.c = one.data();
      kt->row_gemm(g);
      ASSERT_EQ(std::memcmp(one.data(), all.data() + r * n, sizeof(float) * n), 0) << IsaName(isa) << " row " << r;
    }
    if (first.empty()) first = all;
    for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(all[i], first[i], 1e-4 * (1 + std::abs(first[i]))) << IsaName(isa);
  }
  EXPECT_GE(levels, 1);
  std::printf("compared %d kernel levels (best here: %s)\n", levels, IsaName(BestIsa(HostCpu())));
}

TEST(LshRoundOrderTest, SlotsAndWindowsMatchAFullStableSort) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t num_keys = 2 + rng() % 20, n0 = 1 + rng() % 60, extra = rng() % 80;
    std::vector<int32_t> keys(n0);
    for (auto& x : keys) x = static_cast<int32_t>(rng() % num_keys);
    std::vector<uint64_t> st(n0), ap(std::max<int64_t>(extra, 1));
    std::vector<int32_t> counts(num_keys + 1);
    LshRoundOrder order(st.data(), n0, ap.data(), extra);
    order.Reset(keys.data(), 1, n0, num_keys, counts.data());
    for (int64_t step = 0; step <= extra; ++step) {
      const int64_t n = static_cast<int64_t>(keys.size());
      std::vector<int32_t> idx(n);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int32_t x, int32_t y) { return keys[x] < keys[y]; });
      for (int64_t first : {int64_t{0}, -5 - n, n / 3, n - 2}) {
        const int64_t count = 1 + rng() % (2 * n + 3);
        std::vector<int32_t> got(count);
        order.Window(first, count, got.data());
        for (int64_t i = 0; i < count; ++i)
          ASSERT_EQ(got[i], idx[(((first + i) % n) + n) % n]) << "trial " << trial << " step " << step;
      }
      if (step == extra) break;
      const int32_t key = static_cast<int32_t>(rng() % (num_keys + 3));
      keys.push_back(key);
      std::vector<int32_t> all(keys.size());
      std::iota(all.begin(), all.end(), 0);
      std::stable_sort(all.begin(), all.end(), [&](int32_t x, int32_t y) { return keys[x] < keys[y]; });
      const int64_t want = std::find(all.begin(), all.end(), static_cast<int32_t>(n)) - all.begin();
      ASSERT_EQ(order.Append(key), want);
    }
  }
}

TEST(CachedAttentionTest, OneQueryMatchesANaiveSoftmax) {
  for (int64_t dh : {20, 64, 72, 128, 200}) {  // every vector count of the weighted sum, and tails
    SCOPED_TRACE(dh);
    const int64_t n = 37;
    const std::vector<float> q = Random(dh, 1), k = Random(n * dh, 2), v = Random(n * dh, 3);
    std::vector<const float*> kr(n), vr(n);
    std::vector<int32_t> pos(n);
    for (int64_t j = 0; j < n; ++j) {
      kr[j] = k.data() + j * dh;
      vr[j] = v.data() + j * dh;
      pos[j] = static_cast<int32_t>(j % 11);  // position 3 repeats: every copy gets SELF
    }
    std::vector<float> scores(n), out(dh);
    const float lse = AttendOneQuery(q.data(), kr.data(), vr.data(), pos.data(), n, dh, 3,
                                     scores.data(), out.data());
    std::vector<double> s(n);
    double mx = -1e300;
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t i = 0; i < dh; ++i) d += static_cast<double>(q[i]) * k[j * dh + i];
      s[j] = pos[j] == 3 ? -1e5 : d;
      mx = std::max(mx, s[j]);
    }
    double sum = 0;
    for (double x : s) sum += std::exp(x - mx);
    EXPECT_NEAR(lse, mx + std::log(sum), 1e-4);
    for (int64_t i = 0; i < dh; ++i) {
      double o = 0;
      for (int64_t j = 0; j < n; ++j) o += std::exp(s[j] - mx) / sum * v[j * dh + i];
      EXPECT_NEAR(out[i], o, 1e-5) << i;
    }
  }
  const int64_t dh = 72;
  // Rounds: weights exp(lse_r - logsumexp(lse)).
  const std::vector<float> o3 = Random(3 * dh, 5), l3 = {-1.f, 0.5f, -1e5f};
  std::vector<float> comb(dh);
  CombineRounds(o3.data(), l3.data(), 3, dh, comb.data());
  const double z = std::log(std::exp(-1.0) + std::exp(0.5));
  for (int64_t i = 0; i < dh; ++i)
    EXPECT_NEAR(comb[i], std::exp(-1.0 - z) * o3[i] + std::exp(0.5 - z) * o3[dh + i], 1e-5);
}

}  // namespace
}  // namespace reformer
