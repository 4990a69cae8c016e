#include "engine/model/scoring.h"

#include <cmath>

#include "engine/model/tokenizer.h"

namespace reformer {

double ScoreTotals::bits() const { return nll_nats / std::log(2.0); }
double ScoreTotals::bits_per_byte() const { return bytes > 0 ? bits() / static_cast<double>(bytes) : 0.0; }
double ScoreTotals::perplexity() const {
  return tokens > 0 ? std::exp(nll_nats / static_cast<double>(tokens)) : 1.0;
}
void ScoreTotals::Add(const ScoreTotals& o) {
  nll_nats += o.nll_nats;
  tokens += o.tokens;
  bytes += o.bytes;
}

ScoreTotals ScoreWindow(absl::Span<const int32_t> ids, absl::Span<const float> logprobs,
                        const Tokenizer* tokenizer) {
  ScoreTotals s;
  const size_t n = std::min(ids.size(), logprobs.size());
  for (size_t t = 1; t < n; ++t) {
    s.nll_nats -= static_cast<double>(logprobs[t]);
    s.tokens += 1;
  }
  s.bytes = tokenizer != nullptr ? tokenizer->PredictedBytes(ids.subspan(0, n)) : s.tokens;
  return s;
}

std::vector<absl::Span<const int32_t>> SplitWindows(absl::Span<const int32_t> ids, int64_t max_len) {
  std::vector<absl::Span<const int32_t>> out;
  if (max_len <= 0) return out;
  for (size_t start = 0; start < ids.size(); start += static_cast<size_t>(max_len)) {
    out.push_back(ids.subspan(start, static_cast<size_t>(max_len)));
  }
  return out;
}

}  // namespace reformer
