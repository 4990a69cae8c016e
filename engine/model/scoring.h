// Scoring helpers shared by the CLI and the server: bits per byte and perplexity from the
// engine's token_logprobs, and splitting a long token sequence into context-sized windows.
//
// Bits per byte of a text = −Σ_{t≥1} log2 p(x_t | x_<t) / (bytes of tokens 1…T−1); the first token of
// every window has no prediction and is not counted.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace reformer {

class Tokenizer;

struct ScoreTotals {
  double nll_nats = 0;     // −Σ ln p over counted tokens
  int64_t tokens = 0;      // counted (predicted) tokens
  int64_t bytes = 0;       // bytes of the counted tokens (tokenizer), or tokens when there is none
  double bits() const;     // nll in bits
  double bits_per_byte() const;
  double perplexity() const;  // per counted token: exp(nll / tokens)
  void Add(const ScoreTotals& other);
};

// Totals for one window: `logprobs[t]` = log p(ids[t] | ids[<t]), t = 0 ignored.
ScoreTotals ScoreWindow(absl::Span<const int32_t> ids, absl::Span<const float> logprobs,
                        const Tokenizer* tokenizer);

// Consecutive, non-overlapping windows of at most `max_len` tokens covering `ids`.
std::vector<absl::Span<const int32_t>> SplitWindows(absl::Span<const int32_t> ids, int64_t max_len);

}  // namespace reformer
