// Sampling (engine/model/sampling.h): the Philox stream against Random123's published answers,
// greedy ties, HF's top-k / top-p rules on hand-made logits, seeded determinism and the empirical
// distribution of draws.
#include <cmath>
#include <map>
#include <set>

#include "engine/model/sampling.h"
#include "gtest/gtest.h"

namespace reformer {
namespace {

TEST(SamplingTest, PhiloxKnownAnswers) {
  // Random123's kat_vectors for philox4x32 with 10 rounds.
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}), (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(SamplingTest, UniformDrawsAreInRangeAndDependOnSeedAndIndexOnly) {
  std::set<double> seen;
  for (uint64_t i = 0; i < 1000; ++i) {
    const double u = UniformDraw(42, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    seen.insert(u);
    EXPECT_EQ(u, UniformDraw(42, i));
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_NE(UniformDraw(1, 0), UniformDraw(2, 0));
  EXPECT_NE(UniformDraw(uint64_t{1} << 40, 0), UniformDraw(0, 0));  // high seed bits count
}

TEST(SamplingTest, GreedyIsArgmaxWithLowestIdOnTies) {
  std::vector<float> scratch;
  SamplingParams p;  // temperature 0
  EXPECT_EQ(ChooseToken(std::vector<float>{0.f, 3.f, 1.f, 3.f}, p, 0, &scratch), 1);
  p.top_k = 1;
  p.top_p = 0.1f;
  EXPECT_EQ(ChooseToken(std::vector<float>{5.f, 3.f, 1.f, 3.f}, p, 7, &scratch), 0);
}

// A temperature so small that logits / temperature overflows float (QA: 1e-40 chose garbage tokens through
// +inf - +inf = NaN) samples from the limit distribution: the argmax, whatever the signs of the logits.
TEST(SamplingTest, VanishingTemperatureIsGreedy) {
  std::vector<float> scratch;
  for (float t : {1e-30f, 1e-38f, 1e-40f, 1e-45f}) {
    for (const std::vector<float>& logits : {std::vector<float>{0.5f, 7.f, -3.f, 6.9f},
                                             std::vector<float>{-9.f, -2.f, -8.f, -2.5f}}) {
      for (int32_t top_k : {0, 2}) {
        SamplingParams p;
        p.temperature = t;
        p.top_k = top_k;
        p.seed = 5;
        for (uint64_t i = 0; i < 64; ++i) EXPECT_EQ(ChooseToken(logits, p, i, &scratch), 1) << t << " " << i;
      }
    }
  }
}

// Frequencies of ChooseToken over many draw indices.
std::map<int32_t, double> Frequencies(const std::vector<float>& logits, const SamplingParams& p, int n) {
  std::map<int32_t, double> f;
  std::vector<float> scratch;
  for (int i = 0; i < n; ++i) f[ChooseToken(logits, p, static_cast<uint64_t>(i), &scratch)] += 1.0 / n;
  return f;
}

TEST(SamplingTest, DrawsFollowTheSoftmax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 9;
  auto f = Frequencies(logits, p, 20000);
  EXPECT_NEAR(f[0], 0.5, 0.015);
  EXPECT_NEAR(f[1], 0.3, 0.015);
  EXPECT_NEAR(f[2], 0.2, 0.015);
  p.temperature = 0.5f;  // probabilities ∝ p²: 25/38, 9/38, 4/38
  f = Frequencies(logits, p, 20000);
  EXPECT_NEAR(f[0], 25.0 / 38, 0.015);
  EXPECT_NEAR(f[2], 4.0 / 38, 0.015);
}

TEST(SamplingTest, TopKKeepsTheKHighestAndTies) {
  SamplingParams p;
  p.temperature = 1.f;
  p.top_k = 2;
  auto f = Frequencies({1.f, 4.f, 3.f, 2.f}, p, 4000);
  EXPECT_EQ(f.count(0) + f.count(3), 0u);
  EXPECT_NEAR(f[1], 1 / (1 + std::exp(-1.0)), 0.03);
  f = Frequencies({3.f, 4.f, 3.f, 2.f}, p, 4000);  // tie with the 2nd highest: both kept
  EXPECT_GT(f[0], 0.1);
  EXPECT_GT(f[2], 0.1);
  EXPECT_EQ(f.count(3), 0u);
}

TEST(SamplingTest, TopPFollowsHuggingFacesRule) {
  // Probabilities 0.5, 0.3, 0.15, 0.05. HF drops tokens whose ascending cumulative mass is <= 1 - top_p.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.f;
  p.top_p = 0.75f;  // ascending cum: 0.05, 0.20 (both <= 0.25: dropped), 0.50 -> keep {0, 1}
  auto f = Frequencies(logits, p, 4000);
  EXPECT_EQ(f.count(2) + f.count(3), 0u);
  EXPECT_NEAR(f[0], 0.5 / 0.8, 0.03);
  p.top_p = 0.85f;  // 0.05 <= 0.15 dropped; 0.20 > 0.15: token 2 stays
  f = Frequencies(logits, p, 4000);
  EXPECT_GT(f[2], 0.05);
  EXPECT_EQ(f.count(3), 0u);
  p.top_p = 0.f;  // only the most likely survives
  f = Frequencies(logits, p, 500);
  EXPECT_EQ(f.size(), 1u);
  EXPECT_EQ(f.begin()->first, 0);
}

TEST(SamplingTest, SameSeedSameTokensOtherSeedOtherTokens) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  SamplingParams p;
  p.temperature = 1.f;
  p.top_k = 30;
  p.top_p = 0.9f;
  std::vector<float> s1, s2;
  std::vector<int32_t> a, b, other;
  for (uint64_t i = 0; i < 200; ++i) {
    p.seed = 123;
    a.push_back(ChooseToken(logits, p, i, &s1));
    b.push_back(ChooseToken(logits, p, i, &s2));
    p.seed = 124;
    other.push_back(ChooseToken(logits, p, i, &s1));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
}

TEST(SamplingTest, ValidationNamesTheField) {
  SamplingParams p;
  EXPECT_TRUE(ValidateSampling(p).ok());
  p.temperature = -0.5f;
  EXPECT_NE(ValidateSampling(p).message().find("temperature"), std::string::npos);
  p.temperature = NAN;
  EXPECT_FALSE(ValidateSampling(p).ok());
  p = SamplingParams();
  p.top_k = -1;
  EXPECT_NE(ValidateSampling(p).message().find("top_k"), std::string::npos);
  p = SamplingParams();
  p.top_p = 1.5f;
  EXPECT_NE(ValidateSampling(p).message().find("top_p"), std::string::npos);
  p.top_p = 1.0000001f;  // the message shows the value that was refused, not its 6-digit rounding "1"
  EXPECT_NE(ValidateSampling(p).message().find("got 1.0000001"), std::string::npos) << ValidateSampling(p);
  p.top_p = -0.1f;
  EXPECT_NE(ValidateSampling(p).message().find("got -0.1"), std::string::npos) << ValidateSampling(p);
}

TEST(SamplingTest, TokenLogprobIsLogSoftmax) {
  const std::vector<float> logits = {1.f, 2.f, 3.f};
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(TokenLogprob(logits, 1), 2.0 - lse, 1e-6);
}

}  // namespace
}  // namespace reformer
