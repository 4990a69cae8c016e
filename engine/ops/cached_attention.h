// Attention of one new token against cached keys: the per-head pieces of the decoding step
// (engine-numerics §13, docs/generation.md). Numerics as the forward's (ops/attention.h,
// engine-numerics §6/§9): float32 scores, SELF = -1e5 replacing a score, softmax through a float32
// log-sum-exp.
#pragma once

#include <cstdint>

namespace reformer {

// Shared-QK key normalisation of one row (engine-numerics §7.1): u / sqrt(mean(u²) + 1e-6) /
// sqrt(dh), computed exactly as LshAttentionHead computes it.
void KeyNormRow(const float* u, int64_t dh, float* dst);

// One query row q against n keys and values given by row pointers. Keys whose position kpos[j]
// equals `self_pos` get the score SELF (pass self_pos < 0 for none). Writes
// out[0..dh) = Σ_j softmax(s)_j · v_rows[j] and returns the row's lse. `scores` holds n floats.
float AttendOneQuery(const float* q, const float* const* k_rows, const float* const* v_rows,
                     const int32_t* kpos, int64_t n, int64_t dh, int32_t self_pos, float* scores,
                     float* out);

// engine-numerics §7.7 for one token: out = Σ_r exp(lse[r] - logsumexp(lse)) · o[r], o = [rounds,
// dh].
void CombineRounds(const float* o, const float* lse, int64_t rounds, int64_t dh, float* out);

}  // namespace reformer
