// Choosing the next token from a step's logits (docs/generation.md "Sampling"). Wire-independent:
// the server and the CLI both use it.
//
// Order as Hugging Face's generate(do_sample=True) applies its warpers: temperature, then top-k,
// then top-p, then a draw from the softmax of what is left. temperature 0 is greedy decoding
// (argmax, the lowest id on ties, as torch.argmax), whatever top_k and top_p say.
//
// Random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011), keyed by the request's 64-bit seed; the draw for new token i uses counter
// (i, 0, 0, 0) and turns its first two words into a 53-bit uniform in [0, 1). A draw depends on
// (seed, i) only — not on other requests, threads, the machine or what was drawn before — so the
// same seed gives the same tokens wherever the logits are the same (alone or beside others; the
// step's logits are batch-invariant, engine/model/decoder.h). HF's own samples come from torch's
// generator and cannot be reproduced outside torch (tests/fixtures/generation/README).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace reformer {

struct SamplingParams {
  float temperature = 0.f;  // >= 0; 0 = greedy
  int32_t top_k = 0;        // >= 0; 0 = off; else keep the k highest scores (and any tied with the k-th)
  // In [0, 1]; 1 = off. Else HF's TopPLogitsWarper: with tokens sorted from least to most likely,
  // drop those whose cumulative probability is <= 1 - top_p; the most likely token always stays.
  float top_p = 1.f;
  uint64_t seed = 0;        // any value (a server may pick one when the client gives none)
};

// INVALID_ARGUMENT naming the field and its value.
absl::Status ValidateSampling(const SamplingParams& p);

// One Philox4x32-10 block.
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// The uniform in [0, 1) of draw `index` under `seed` (53 bits).
double UniformDraw(uint64_t seed, uint64_t index);

// Picks the next token from logits [V]; `index` = the new token's index in the generation (0 for
// the first). `scratch` is reused between calls.
int32_t ChooseToken(absl::Span<const float> logits, const SamplingParams& p, uint64_t index,
                    std::vector<float>* scratch);

// log softmax(logits)[token] of the model's own distribution (temperature 1, nothing filtered),
// computed as the engine computes token_logprobs.
float TokenLogprob(absl::Span<const float> logits, int32_t token);

}  // namespace reformer
