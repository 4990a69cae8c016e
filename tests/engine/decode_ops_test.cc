// The decoding step's ops against naive references: RowGemm (bitwise row independence for every
// row count, position and thread count; values, bias, activations, accumulation, tails),
// LshRoundOrder (slots and windows against a full std::stable_sort at every insertion, including
// windows longer than the sequence and negative starts), AttendOneQuery and CombineRounds.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "engine/ops/cached_attention.h"
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

TEST(RowGemmTest, EveryRowIsBitwiseIndependentOfTheOthers) {
  for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{{7, 5}, {33, 70}, {128, 258}, {64, 1100}}) {
    const int64_t max_m = 40;
    const std::vector<float> a = Random(max_m * k, 1), b = Random(k * n, 2), bias = Random(n, 3);
    std::vector<float> single(n);
    for (PostOp op : {PostOp::kNone, PostOp::kRelu, PostOp::kGeluErf}) {
      for (bool acc : {false, true}) {
        RowGemmCall g;
        g.n = n;
        g.k = k;
        g.lda = k;
        g.b = b.data();
        g.ldb = n;
        g.bias = bias.data();
        g.ldc = n;
        g.post_op = op;
        g.accumulate = acc;
        // Row 0 of a alone, then as row r of calls of m rows, 1 or 2 threads.
        const std::vector<float> init = Random(max_m * n, 4);
        g.m = 1;
        g.a = a.data();
        std::memcpy(single.data(), init.data(), sizeof(float) * n);
        g.c = single.data();
        RowGemm(g);
        for (int threads : {1, 2})
          for (int64_t m : {2, 5, 6, 7, 13, 40})
            for (int64_t r : {int64_t{0}, m / 2, m - 1}) {
              omp_set_num_threads(threads);
              std::vector<float> rows(a.begin(), a.begin() + m * k);
              std::copy(a.begin(), a.begin() + k, rows.begin() + r * k);
              std::vector<float> c(init.begin(), init.begin() + m * n);
              std::memcpy(c.data() + r * n, init.data(), sizeof(float) * n);
              g.m = m;
              g.a = rows.data();
              g.c = c.data();
              RowGemm(g);
              ASSERT_EQ(std::memcmp(c.data() + r * n, single.data(), sizeof(float) * n), 0)
                  << "k " << k << " n " << n << " m " << m << " row " << r << " threads " << threads;
            }
        // And the values: a naive double product.
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p) s += static_cast<double>(a[p]) * b[p * n + j];
          float v = ApplyPostOp(op, 0.f, static_cast<float>(s + bias[j]));
          if (acc) v += init[j];
          ASSERT_NEAR(single[j], v, 1e-4 * (1 + std::abs(v))) << j;
        }
      }
    }
  }
  omp_set_num_threads(2);
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
  const int64_t dh = 72, n = 37;  // dh not a multiple of 64: the tail path too
  const std::vector<float> q = Random(dh, 1), k = Random(n * dh, 2), v = Random(n * dh, 3);
  std::vector<const float*> kr(n), vr(n);
  std::vector<int32_t> pos(n);
  for (int64_t j = 0; j < n; ++j) {
    kr[j] = k.data() + j * dh;
    vr[j] = v.data() + j * dh;
    pos[j] = static_cast<int32_t>(j % 11);  // position 3 repeats: every copy gets SELF
  }
  std::vector<float> scores(n), out(dh);
  const float lse = AttendOneQuery(q.data(), kr.data(), vr.data(), pos.data(), n, dh, 3, scores.data(), out.data());
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
