// The per-sequence state of a generation (engine-internal; the public handle is DecodeState in
// engine/model/decoder.h). docs/generation.md explains the layout and its memory.
//
// Hugging Face's cache (engine-numerics §13) keeps, per layer, the LayerNorm outputs of every
// position and, for LSH layers that hashed, the sort keys. A step then projects the states of its
// attention window again. We keep the projections instead (they are what the prompt's forward and
// every step compute anyway), so a step projects only the new token:
//  - LSH layer: knorm(qk) | v of every position, [capacity, heads, 2 * head_size] (the keys are
//    normalised once, engine-numerics §7.1, not at every step that reads them); and, when a step
//    will hash the whole cache (the prompt did not hash), the raw qk of the positions it hashes;
//  - local layer: k / sqrt(head_size) | v of the last (before + 1) * chunk positions only, as a
//    ring ([ring_rows, heads, 2 * head_size], position p at row p % ring_rows): a step's window
//    never reaches further back (docs/generation.md);
//  - LSH layer that hashes: per (head, round) the sorted order of the sort keys (LshRoundOrder);
//    its static run holds the positions hashed at once, its appended run the later ones.
// Everything lives in one anonymous mapping sized at creation from the prompt length and
// max_new_tokens, so PlanCache's byte count is exact and freeing is one munmap.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/decoder.h"
#include "engine/ops/lsh_round_order.h"

namespace reformer {

struct CachePlan {
  DecodeMode mode = DecodeMode::kCached;
  int64_t prompt_length = 0;
  int64_t capacity = 0;        // positions ever fed: prompt + max_new_tokens - 1
  int64_t ring_rows = 0;       // rows kept per local layer
  int64_t hashed_at_once = 0;  // static run length (0: the sequence never hashes)
  int64_t raw_rows = 0;        // positions whose raw qk is kept (hashed by a step, else 0)
  int64_t appended = 0;        // appended run capacity
  size_t block_bytes = 0;      // the mapping (page-rounded)
  size_t bytes = 0;            // block + bookkeeping objects: what the sequence holds
};

// Layout of a sequence's state. Pure function of its arguments.
CachePlan PlanCache(const ReformerConfig& config, int64_t prompt_length, int64_t max_new_tokens,
                    DecodeMode mode);

// Sort keys of a round relative to its offset lie in [0, nb + nH) (docs/generation.md).
inline int64_t RelativeKeyRange(const ReformerConfig& c) { return c.total_buckets() + c.num_hashes; }

class DecodeCache {
 public:
  struct Layer {
    AttnType type = AttnType::kLocal;
    float* rows = nullptr;  // [positions or ring rows, heads, 2 * head_size]
    float* raw_qk = nullptr;  // LSH: [raw_rows, heads, head_size] or null
    int64_t ring_rows = 0;  // local: rows of the ring; LSH: 0 (row = position)
    bool hashed = false;    // LSH: the sort keys are cached (HF's past_buckets is set)
    int64_t max_key = -1;   // LSH: largest cached sort key (with round offsets), for HF's test
    std::vector<LshRoundOrder> orders;  // LSH: [heads * num_hashes]
  };

  static absl::StatusOr<std::unique_ptr<DecodeCache>> Create(const ReformerConfig& config, const CachePlan& plan);
  ~DecodeCache();
  DecodeCache(const DecodeCache&) = delete;
  DecodeCache& operator=(const DecodeCache&) = delete;

  const CachePlan& plan() const { return plan_; }
  int32_t* tokens() { return tokens_; }        // [capacity]: prompt, then the fed tokens
  Layer& layer(int64_t i) { return layers_[i]; }
  // Row of `head` at `pos` (local layers: its ring row).
  float* Row(int64_t layer, int64_t pos, int64_t head) {
    const Layer& l = layers_[layer];
    const int64_t r = l.ring_rows > 0 ? pos % l.ring_rows : pos;
    return l.rows + (r * heads_ + head) * row_width_;
  }
  int64_t row_width() const { return row_width_; }  // 2 * head_size
  // Raw qk of `head` at `pos` < plan().raw_rows (LSH layers).
  float* RawQk(int64_t layer, int64_t pos, int64_t head) {
    return layers_[layer].raw_qk + (pos * heads_ + head) * (row_width_ / 2);
  }

 private:
  DecodeCache() = default;
  CachePlan plan_;
  void* block_ = nullptr;
  int32_t* tokens_ = nullptr;
  int64_t heads_ = 0, row_width_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace reformer
