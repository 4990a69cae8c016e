// Generation requests above the decoder (docs/generation.md): parameters and their one validation
// point, the per-sequence controller (token choice, EOS, stop strings, max_new_tokens, streamed
// text in whole UTF-8 characters, logprobs), and an offline driver that runs a set of requests to
// completion with continuous batching. Wire-independent: the CLI uses all of it; the server's
// generation loop uses GenerationSequence with its own scheduling around Decoder.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/decoder.h"
#include "engine/model/sampling.h"

namespace reformer {

class Tokenizer;

enum class FinishReason { kNone, kLength, kEos, kStop };
// "length", "eos", "stop" ("" for kNone).
const char* FinishReasonName(FinishReason r);

struct GenerationParams {
  int64_t max_new_tokens = 16;  // >= 1; prompt + max_new_tokens <= the model's context
  SamplingParams sampling;
  // Generation ends when the generated text contains one of these (non-empty) strings; the text
  // returned stops before it (the stop string is not emitted), the tokens include the one that
  // completed it.
  std::vector<std::string> stop;
  bool ignore_eos = false;  // else an id of the config's eos_token_id ends the sequence (and is returned)
  DecodeMode mode = DecodeMode::kCached;
};

// Everything a request can get wrong, with the numbers in the message (INVALID_ARGUMENT).
absl::Status ValidateGeneration(const ReformerConfig& config, absl::Span<const int32_t> prompt,
                                const GenerationParams& params);

// Text of token ids as it grows, in whole UTF-8 characters: a character still incomplete at the end
// (a byte-level token sequence cut inside a multi-byte character, or SentencePiece's U+FFFD for an
// incomplete byte-fallback sequence) is held back until it completes, across any number of Add
// calls; each maximal subpart of an ill-formed sequence becomes one U+FFFD (Unicode Standard ch. 3,
// as the WHATWG decoder does). SentencePiece replaces invalid byte-fallback bytes itself, before
// this class sees the text.
// Decodes only a short window of recent tokens per call (the approach of vLLM's incremental
// detokenizer), so a call costs O(1) in the length of the text.
class IncrementalDetokenizer {
 public:
  // `context`: ids before the generated ones (e.g. the prompt's last token), so that SentencePiece
  // renders a leading word boundary as the space it is.
  IncrementalDetokenizer(const Tokenizer* tokenizer, std::vector<int32_t> context);
  // Adds one id; returns the text it completed (possibly empty).
  std::string Add(int32_t id);
  // The text held back, with an incomplete character at the end as one U+FFFD.
  std::string Flush();

 private:
  std::string Decode(size_t from, size_t to) const;
  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0, read_offset_ = 0;
};

// What a sequence produced since the last TakeDelta.
struct GenerationDelta {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // log p of each token under the model (temperature 1, unfiltered)
  std::string text;             // whole UTF-8 characters only
  FinishReason finish = FinishReason::kNone;  // set on the last delta
};

// The controller of one sequence: feed it each step's logits.
class GenerationSequence {
 public:
  // `tokenizer` may be null (no text); `prompt` is the request's prompt (not kept).
  GenerationSequence(const ReformerConfig& config, const Tokenizer* tokenizer, absl::Span<const int32_t> prompt,
                     GenerationParams params);
  // Chooses the next token from `logits` [V] and updates the state; returns the token. The caller
  // feeds it to the decoder unless finished() is now true.
  int32_t Accept(absl::Span<const float> logits);
  bool finished() const { return finish_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return finish_; }
  GenerationDelta TakeDelta();
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::vector<float>& logprobs() const { return logprobs_; }
  const std::string& text() const { return text_; }  // text so far, held-back part excluded
  const GenerationParams& params() const { return params_; }

 private:
  void AppendText(const std::string& piece);
  GenerationParams params_;
  std::vector<int64_t> eos_;
  IncrementalDetokenizer detok_;
  bool has_text_;
  std::vector<int32_t> tokens_;
  std::vector<float> logprobs_;
  std::string text_;          // complete text (stop string and after removed when stopped)
  size_t emitted_text_ = 0;   // bytes of text_ handed out
  size_t emitted_tokens_ = 0;
  FinishReason finish_ = FinishReason::kNone;
  std::vector<float> scratch_;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  GenerationParams params;
};

struct GenerationResult {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::string text;
  FinishReason finish = FinishReason::kNone;
};

struct GenerateOptions {
  // At most this many sequences hold a state at once (0 = all); waiting requests join as others
  // finish (continuous batching).
  int64_t max_active = 0;
  // Called with each request's new tokens/text after every step that produced some.
  std::function<void(size_t request, const GenerationDelta& delta)> on_delta;
  CancelFn cancel;
};

// Runs `requests` to completion on `decoder` (which must belong to the calling thread). Results in
// request order. Validation errors name the request.
absl::StatusOr<std::vector<GenerationResult>> Generate(Decoder* decoder, const ReformerModel& model,
                                                       absl::Span<const GenerationRequest> requests,
                                                       const GenerateOptions& options = {});

}  // namespace reformer
