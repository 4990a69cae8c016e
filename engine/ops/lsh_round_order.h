// The sorted order of one LSH hash round's cached sort keys, kept incrementally for the decoding
// step (engine-numerics §13, docs/generation.md "The incremental sort").
//
// Hugging Face's cached step appends the new token's key to the round's cached keys, stable-sorts
// all T + 1 of them and looks at the new token's slot. Since the new token has the largest index,
// its slot is the number of cached keys <= its key, and the other tokens keep their relative order:
// the new order is the old one with the new token inserted at that slot. This class holds the order
// as two sorted runs of (key, position) pairs:
//  - the static run: the positions hashed at once (the prompt, or the whole cache at the step that
//    starts hashing), counting-sorted once;
//  - the appended run: positions hashed one at a time afterwards, kept sorted by insertion.
// Every appended position is larger than every static one, so the stable order is the merge of the
// two runs by (key, position). Append costs a binary search and a move of the appended run's tail
// (O(log T + appended)); reading w consecutive slots costs one O(log T) split plus w merge steps.
//
// Keys are the round's sort keys minus the round offset (docs/generation.md), >= 0.
// Memory is the caller's (the sequence cache): the class holds views only. Not thread-safe.
#pragma once

#include <cstdint>

namespace reformer {

class LshRoundOrder {
 public:
  LshRoundOrder() = default;
  // `static_items` holds `static_capacity` entries, `appended_items` `appended_capacity`.
  LshRoundOrder(uint64_t* static_items, int64_t static_capacity, uint64_t* appended_items,
                int64_t appended_capacity)
      : static_(static_items), static_cap_(static_capacity), appended_(appended_items),
        appended_cap_(appended_capacity) {}

  // Positions 0..n-1 with keys[t * stride] in [0, num_keys): the static run. `counts` is
  // scratch of num_keys + 1 ints. Clears the appended run.
  void Reset(const int32_t* keys, int64_t stride, int64_t n, int64_t num_keys, int32_t* counts);

  // Appends position size() with `key`; returns its slot in the stable order of all size() + 1.
  int64_t Append(int32_t key);

  // positions[i] = position at slot (first + i) mod size() for i < count (Python's modulo: `first`
  // may be negative, and count may exceed size(), then positions repeat).
  void Window(int64_t first, int64_t count, int32_t* positions) const;

  int64_t size() const { return n_static_ + n_appended_; }

 private:
  // Number of static items among the first `slot` items of the merged order.
  int64_t StaticBefore(int64_t slot) const;

  uint64_t* static_ = nullptr;
  int64_t static_cap_ = 0;
  uint64_t* appended_ = nullptr;
  int64_t appended_cap_ = 0;
  int64_t n_static_ = 0;
  int64_t n_appended_ = 0;
};

}  // namespace reformer
