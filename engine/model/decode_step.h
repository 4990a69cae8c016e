// The attention of one (sequence, layer, head) in a cached decoding step: Hugging Face's cached
// semantics (engine-numerics §13) on our cache (engine/model/decode_cache.h). Engine-internal.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/decode_cache.h"

namespace reformer {

// Per-thread scratch, sized once for a model by Reserve.
struct StepScratch {
  std::vector<float> scores, rounds_out, lse, hash;
  std::vector<const float*> k_rows, v_rows;
  std::vector<int32_t> pos, bucket_keys, counts;
  void Reserve(const ReformerConfig& c);
  size_t bytes() const;
};

// Local layer: the new token's k | v already sit at position L = the cache length before the step.
// Attends q over positions start..L (HF's window, engine-numerics §13), no mask. Writes out[0..dh).
void LocalStepHead(const ReformerConfig& c, DecodeCache* cache, int64_t layer, int64_t head, int64_t L,
                   const float* q, StepScratch* s, float* out);

// LSH layer: the new token's knorm(qk) | v (and, while it may be hashed with the cache, its raw qk)
// already sit at position L; `q` is its raw qk. Without cached keys: plain attention over 0..L,
// and when L + 1 reaches the chunk length every position is hashed into the head's round orders.
// With them: the new token is hashed (`increase`: HF's increase_num_buckets), inserted in each
// round's order, and attends within its chunk window; rounds are combined. `rotations` is the
// head's [dh, nH * rotation_size / 2] block. Returns the largest sort key this call cached (round
// offsets included), or -1.
int64_t LshStepHead(const ReformerConfig& c, DecodeCache* cache, int64_t layer, int64_t head, int64_t L,
                    const float* q, const float* rotations, bool increase, StepScratch* s, float* out);

}  // namespace reformer
