#include "engine/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/ops/softmax.h"

namespace reformer {
namespace {

// Scores to -inf below the k-th largest (HF's TopKLogitsWarper keeps ties with the k-th).
void TopK(std::vector<float>* s, int32_t k) {
  if (k <= 0 || k >= static_cast<int32_t>(s->size())) return;
  std::vector<float> sorted(*s);
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[k - 1];
  for (float& x : *s)
    if (x < kth) x = -INFINITY;
}

// HF's TopPLogitsWarper: ascending sort (ties: the higher id first, so the lower id ranks as more
// likely), cumulative softmax, drop where cum <= 1 - top_p, always keep the last (most likely).
void TopP(std::vector<float>* s, float top_p) {
  if (top_p >= 1.f) return;
  const int64_t n = static_cast<int64_t>(s->size());
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return (*s)[a] != (*s)[b] ? (*s)[a] < (*s)[b] : a > b;
  });
  const float mx = (*s)[order[n - 1]];
  double total = 0;
  for (float x : *s) total += std::exp(static_cast<double>(x) - mx);
  double cum = 0;
  std::vector<int32_t> drop;
  for (int64_t i = 0; i + 1 < n; ++i) {
    cum += std::exp(static_cast<double>((*s)[order[i]]) - mx) / total;
    if (cum <= 1.0 - top_p) drop.push_back(order[i]);
  }
  for (int32_t i : drop) (*s)[i] = -INFINITY;
}

int32_t Argmax(absl::Span<const float> x) {
  return static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

// logits / temperature as HF divides them. A temperature so small that the quotient overflows (e.g. 1e-40)
// would leave +inf - +inf = NaN in the softmax below; then the max-shifted quotient, (x - max) / temperature,
// is used instead: the same distribution in exact arithmetic, finite at its peak, and greedy in the limit.
void ScaleByTemperature(absl::Span<const float> logits, float temperature, std::vector<float>* out) {
  std::vector<float>& s = *out;
  s.assign(logits.begin(), logits.end());
  for (float& x : s) x = x / temperature;
  if (std::isfinite(*std::max_element(s.begin(), s.end()))) return;
  const float mx = *std::max_element(logits.begin(), logits.end());
  for (size_t i = 0; i < s.size(); ++i) s[i] = (logits[i] - mx) / temperature;
}

// The shortest decimal that reads back as `x` (1.0000001f is not printed as "1").
std::string ShortestFloat(float x) {
  for (int digits = 6; digits < 9; ++digits) {
    std::string s = absl::StrFormat("%.*g", digits, x);
    if (std::strtof(s.c_str(), nullptr) == x) return s;
  }
  return absl::StrFormat("%.9g", x);
}

}  // namespace

absl::Status ValidateSampling(const SamplingParams& p) {
  if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature))
    return absl::InvalidArgumentError(absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p >= 0.f && p.top_p <= 1.f))
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in [0, 1], got ", ShortestFloat(p.top_p)));
  return absl::OkStatus();
}

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kW0;
      key[1] += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0], p1 = static_cast<uint64_t>(kM1) * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
  }
  return ctr;
}

double UniformDraw(uint64_t seed, uint64_t index) {
  const std::array<uint32_t, 4> r =
      Philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0, 0},
                 {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  const uint64_t bits = ((static_cast<uint64_t>(r[0]) << 32) | r[1]) >> 11;
  return static_cast<double>(bits) * 0x1.0p-53;
}

int32_t ChooseToken(absl::Span<const float> logits, const SamplingParams& p, uint64_t index,
                    std::vector<float>* scratch) {
  if (p.temperature == 0.f) return Argmax(logits);
  std::vector<float>& s = *scratch;
  ScaleByTemperature(logits, p.temperature, &s);
  TopK(&s, p.top_k);
  TopP(&s, p.top_p);
  // Inverse CDF of softmax(s) in id order, in double.
  const float mx = *std::max_element(s.begin(), s.end());
  double total = 0;
  for (float x : s) total += std::exp(static_cast<double>(x) - mx);
  const double u = UniformDraw(p.seed, index) * total;
  double cum = 0;
  int32_t last = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -INFINITY) continue;
    cum += std::exp(static_cast<double>(s[i]) - mx);
    last = static_cast<int32_t>(i);
    if (u < cum) return last;
  }
  return last;  // u within rounding of the total
}

float TokenLogprob(absl::Span<const float> logits, int32_t token) {
  std::vector<float> scratch(logits.size());
  return logits[token] - LogSumExp(logits.data(), static_cast<int64_t>(logits.size()), scratch.data());
}

}  // namespace reformer
