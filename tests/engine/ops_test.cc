// Each op against a naive reference written straight from SPEC.md (double or plain float loops).
// Tolerances are stated per test.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/dnnl/matmul.h"
#include "engine/ops/attention.h"
#include "engine/ops/layer_norm.h"
#include "engine/ops/lsh_hashing.h"
#include "engine/ops/simd_math.h"
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

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(SimdExp, MatchesStdExpWithin3Ulp) {
  EXPECT_EQ(simd::HorizontalSum(simd::Exp8(_mm256_setzero_ps())), 8.f);  // exp(0) == 1 exactly
  double worst = 0;
  for (float x = -87.f; x <= 88.f; x += 0.0137f) {
    alignas(32) float out[8];
    _mm256_store_ps(out, simd::Exp8(_mm256_set1_ps(x)));
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(out[0] - ref) / ref);
  }
  EXPECT_LT(worst, 3.6e-7);  // ~3 ulp
  alignas(32) float out[8];
  _mm256_store_ps(out, simd::Exp8(_mm256_set1_ps(-1e9f)));
  EXPECT_EQ(out[0], 0.f);
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
  // SPEC §10.2: a fully masked row gives p = 1 everywhere.
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

// ---- Naive attention references (SPEC §7, §8), float scores, double softmax sums. ----

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

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, LshMatchesNaive) {
  const AttnCase& ac = GetParam();
  auto ctx = std::move(DnnlContext::Create()).value();
  Workspace ws;
  NaiveInput in{ac.T, 16, Randn(ac.T * 16, 20), Randn(ac.T * 16, 21), {}};
  if (ac.masked) {
    in.mask.assign(ac.T, 1);
    for (int64_t t = ac.T - ac.T / 5; t < ac.T; ++t) in.mask[t] = 0;
  }
  LshAttentionParams p;
  p.seq_len = ac.T;
  p.head_dim = 16;
  p.chunk = ac.c;
  p.before = ac.before;
  p.after = ac.after;
  p.causal = ac.causal;
  p.buckets.factors = ac.factorised ? std::vector<int64_t>{2, 4} : std::vector<int64_t>{8};
  p.buckets.num_hashes = ac.hashes;
  p.buckets.padding_bucket = ac.masked;
  std::vector<float> rot = Randn(16 * ac.hashes * p.buckets.rotation_half(), 22);
  std::vector<float> out(ac.T * 16);
  std::vector<int32_t> keys(ac.hashes * ac.T), ref_keys;
  ASSERT_TRUE(LshAttentionHead(ctx.get(), &ws, p, in.qk.data(), 16, in.v.data(), 16, rot.data(),
                               in.mask.empty() ? nullptr : in.mask.data(), out.data(), 16, keys.data(), {})
                  .ok());
  std::vector<float> ref = NaiveLsh(in, p, rot, &ref_keys);
  // Tolerance 1e-5: float sums in different orders (oneDNN vs naive loops).
  EXPECT_LT(MaxAbsDiff(out, ref), 1e-5f);
  if (ac.T > ac.c) {
    EXPECT_EQ(keys, ref_keys);
  }
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.high_water(), LshAttentionWorkBytes(p, omp_get_max_threads()));
}

TEST_P(AttentionTest, LocalMatchesNaive) {
  const AttnCase& ac = GetParam();
  auto ctx = std::move(DnnlContext::Create()).value();
  Workspace ws;
  NaiveInput in{ac.T, 16, Randn(ac.T * 16, 30), Randn(ac.T * 16, 31), {}};
  std::vector<float> k = Randn(ac.T * 16, 32);
  if (ac.masked) {
    in.mask.assign(ac.T, 1);
    for (int64_t t = 0; t < ac.T / 3; ++t) in.mask[t] = 0;  // left padding: fully masked rows
  }
  LocalAttentionParams p;
  p.seq_len = ac.T;
  p.head_dim = 16;
  p.chunk = ac.c;
  p.before = ac.before;
  p.after = ac.after;
  p.causal = ac.causal;
  std::vector<float> out(ac.T * 16);
  ASSERT_TRUE(LocalAttentionHead(ctx.get(), &ws, p, in.qk.data(), 16, k.data(), 16, in.v.data(), 16,
                                 in.mask.empty() ? nullptr : in.mask.data(), out.data(), 16, {})
                  .ok());
  std::vector<float> ref = NaiveLocal(in, k, p);
  // Fully masked rows sum their window's values (SPEC §10.2): compare relative to magnitude.
  float worst = 0;
  for (size_t i = 0; i < out.size(); ++i)
    worst = std::max(worst, std::abs(out[i] - ref[i]) / std::max(1.f, std::abs(ref[i])));
  EXPECT_LT(worst, 1e-5f);
  EXPECT_EQ(ws.high_water(), LocalAttentionWorkBytes(p, omp_get_max_threads()));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionTest,
    ::testing::Values(AttnCase{128, 16, 1, 0, 1, true, false, false}, AttnCase{128, 16, 1, 0, 3, true, true, true},
                      AttnCase{96, 32, 1, 1, 2, false, true, false}, AttnCase{64, 16, 2, 0, 2, true, false, true},
                      AttnCase{24, 32, 1, 0, 2, true, true, false}, AttnCase{32, 32, 1, 0, 4, false, false, false},
                      AttnCase{160, 32, 0, 1, 4, false, true, true}));

}  // namespace
}  // namespace reformer
