// Token-by-token decoding for generation (docs/generation.md): the engine part that the offline CLI
// and the server's generation loop share.
//
//   auto seq = DecodeState::Create(model, prompt, max_new_tokens, DecodeMode::kCached);  // allocates
//   decoder->Prefill({seq.get()}, {logits});              // prompt pass: logits of the last position
//   token = sample(logits);
//   decoder->Step({seq.get()}, {token}, {logits});        // feeds one token, next logits
//   seq.reset();                                           // frees the cache at once
//
// Two modes, both exact to Hugging Face transformers v4.40.2 for a sequence alone (batch of one):
//  - kCached = generate(use_cache=True): the prompt pass keeps a per-sequence cache and each step
//    computes only the new token, with HF's cached-attention semantics (engine-numerics §13);
//  - kRecompute = generate(use_cache=False): every step runs the full forward over prompt + tokens
//    so far (with the internal padding of engine-numerics §4.1) and takes the last position.
// The two differ (HF's cached LSH step is not the full forward); docs/generation.md has the numbers.
//
// Batching: Step advances any set of sequences by one token each; the dense products run over all
// their new rows at once, and a sequence's logits are bitwise the same alone or beside any others
// (engine/ops/row_gemm.h). Prefill runs the prompts as one ragged forward (a document's results do
// not depend on its batch mates, engine/model/forward.h) and can call back between layers so that
// a server can run other sequences' steps in the middle of a long prompt without changing a number.
//
// Threads: a Decoder belongs to the thread that created it (it owns a oneDNN context and a
// workspace, like a Session). A DecodeState holds plain memory only and may move between threads
// and Decoders of the same model, but one call at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/engine_api.h"

namespace reformer {

enum class DecodeMode { kCached, kRecompute };

class DecodeCache;

// One sequence being generated: its tokens and (cached mode) its cache.
class DecodeState {
 public:
  // Validates and allocates. Errors: INVALID_ARGUMENT (empty prompt, id outside [0, V),
  // max_new_tokens < 1, prompt + max_new_tokens beyond the context or a forward's padded length
  // beyond it, the model is not causal),
  // RESOURCE_EXHAUSTED when the memory cannot be mapped.
  static absl::StatusOr<std::unique_ptr<DecodeState>> Create(const ReformerModel& model,
                                                             absl::Span<const int32_t> prompt,
                                                             int64_t max_new_tokens, DecodeMode mode);
  // Exactly bytes() of such a state: what admission reserves against a memory budget.
  static size_t EstimateBytes(const ReformerConfig& config, int64_t prompt_length, int64_t max_new_tokens,
                              DecodeMode mode);
  // The checks Create makes, without allocating.
  static absl::Status Validate(const ReformerConfig& config, absl::Span<const int32_t> prompt,
                               int64_t max_new_tokens, DecodeMode mode);
  ~DecodeState();

  DecodeMode mode() const { return mode_; }
  int64_t prompt_length() const { return prompt_length_; }
  // Tokens whose effect the state holds: the prompt after Prefill, plus one per Step.
  int64_t length() const { return length_; }
  bool prefilled() const { return length_ > 0; }
  // Largest length() this state accepts: prompt + max_new_tokens - 1 (the last token is never fed).
  int64_t capacity() const;
  size_t bytes() const;

 private:
  friend class Decoder;
  DecodeState() = default;
  DecodeMode mode_ = DecodeMode::kCached;
  int64_t prompt_length_ = 0;
  int64_t length_ = 0;
  std::unique_ptr<DecodeCache> cache_;
};

struct DecoderOptions {
  int num_threads = 1;  // OpenMP threads of this decoder's calls
  // Working memory of the prompt forward (as SessionOptions::workspace_budget_bytes / tile_rows).
  size_t workspace_budget_bytes = 256u << 20;
  int64_t tile_rows = 0;
};

// Called during a prefill between two layers (after layer `layer` - 1) and between two parts of
// layer `layer` (two row tiles of a product, two (head, document) attentions, the attention and
// the feed-forward; ForwardOptions::between_parts in engine/model/forward.h): run other work
// here, e.g. a step of other sequences on the same Decoder, which changes none of the prefill's
// numbers. A non-OK status ends the prefill with it.
using BetweenLayersFn = std::function<absl::Status(int64_t layer)>;

class Decoder {
 public:
  static absl::StatusOr<std::unique_ptr<Decoder>> Create(std::shared_ptr<const ReformerModel> model,
                                                         const DecoderOptions& options);
  ~Decoder();

  // Prompt pass of sequences not yet prefilled; logits[i] ([V], caller memory) receives the logits
  // of sequence i's last prompt position. Errors: INVALID_ARGUMENT (already prefilled, sizes),
  // CANCELLED (`cancel`), or the status `between_layers` returned.
  absl::Status Prefill(absl::Span<DecodeState* const> seqs, absl::Span<float* const> logits,
                       const CancelFn& cancel = nullptr, const BetweenLayersFn& between_layers = nullptr);

  // Feeds tokens[i] to sequence i (all prefilled, distinct, length() < capacity()) and writes the
  // next logits to logits[i]. Cached sequences advance in one batched step; recompute ones run one
  // ragged forward. Errors: INVALID_ARGUMENT, CANCELLED.
  absl::Status Step(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                    absl::Span<float* const> logits, const CancelFn& cancel = nullptr);

  // Working bytes of a Step over n cached sequences (beyond the states themselves).
  static size_t EstimateStepBytes(const ReformerConfig& config, int64_t n, int num_threads);

  // As Session's (engine_api.h): between calls the decoder keeps the forward working memory of its
  // last prompt pass or recompute step (at most that forward's planned peak) for the next one;
  // ReleaseWorkspace returns it to the OS (a server does so when it goes idle) and returns the bytes.
  size_t ReleaseWorkspace();
  size_t retained_workspace_bytes() const;

 private:
  class Impl;
  explicit Decoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace reformer
