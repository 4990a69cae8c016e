// Reformer self-attention for one (document, head), blocked so that working memory is
// O(seq_len * head_dim) plus one (hash round, chunk) block: LSH attention (engine-numerics §7) and
// local attention (engine-numerics §8), including the plain full-attention path for seq_len <=
// chunk.
//
// Inputs are row-major [seq_len, head_dim] views with row strides; outputs are written to
// `out` rows. Masks: `mask` (nullable) is [seq_len], 1 = real key, 0 = padding. Numerics follow
// engine-numerics §6, §9: replaced fill values MASK = -1e9 and SELF = -1e5, softmax through a
// float32 lse. Small products run through oneDNN (`ctx`, single-thread-confined). Working buffers
// are counted in `ws`. `cancel` (may be empty) is polled between blocks: CANCELLED when it returns
// true.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "engine/ops/lsh_hashing.h"

namespace reformer {

class DnnlContext;
class Workspace;

inline constexpr float kMaskValue = -1e9f;
inline constexpr float kSelfMaskValue = -1e5f;

struct LshAttentionParams {
  int64_t seq_len = 0;
  int64_t head_dim = 0;
  int64_t chunk = 64;
  int64_t before = 1;
  int64_t after = 0;
  bool causal = false;
  BucketSpec buckets;
};

struct LocalAttentionParams {
  int64_t seq_len = 0;
  int64_t head_dim = 0;
  int64_t chunk = 64;
  int64_t before = 1;
  int64_t after = 0;
  bool causal = false;
};

using CancelCheck = std::function<bool()>;

// LSH attention of one head. `rotations` is this head's [head_dim, num_hashes * rotation_half]
// block (row-major). When seq_len > chunk and `keys_out` is not null, writes the sort keys
// (bucket + round * NB) as [num_hashes * seq_len].
absl::Status LshAttentionHead(DnnlContext* ctx, Workspace* ws, const LshAttentionParams& p,
                              const float* qk, int64_t ld_qk, const float* v, int64_t ld_v,
                              const float* rotations, const uint8_t* mask, float* out,
                              int64_t ld_out, int32_t* keys_out, const CancelCheck& cancel);

// Local attention of one head; keys are divided by sqrt(head_dim) here.
absl::Status LocalAttentionHead(DnnlContext* ctx, Workspace* ws, const LocalAttentionParams& p,
                                const float* q, int64_t ld_q, const float* k, int64_t ld_k,
                                const float* v, int64_t ld_v, const uint8_t* mask, float* out,
                                int64_t ld_out, const CancelCheck& cancel);

// Bytes the two functions above allocate in `ws` at their peak (for the memory estimate).
size_t LshAttentionWorkBytes(const LshAttentionParams& p, int num_threads);
size_t LocalAttentionWorkBytes(const LocalAttentionParams& p, int num_threads);

}  // namespace reformer
