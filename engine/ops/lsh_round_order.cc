#include "engine/ops/lsh_round_order.h"

#include <algorithm>
#include <cstring>

#include "engine/base/check.h"

namespace reformer {
namespace {

// (key, position) packed so that integer order is the stable sort order.
inline uint64_t Pack(int64_t key, int64_t pos) {
  return (static_cast<uint64_t>(key) << 32) | static_cast<uint64_t>(static_cast<uint32_t>(pos));
}
inline int32_t PositionOf(uint64_t item) { return static_cast<int32_t>(item & 0xffffffffu); }

}  // namespace

void LshRoundOrder::Reset(const int32_t* keys, int64_t stride, int64_t n, int64_t num_keys, int32_t* counts) {
  REFORMER_CHECK(n <= static_cap_);
  std::memset(counts, 0, sizeof(int32_t) * (num_keys + 1));
  for (int64_t t = 0; t < n; ++t) {
    const int32_t k = keys[t * stride];
    REFORMER_CHECK(k >= 0 && k < num_keys);
    ++counts[k + 1];
  }
  for (int64_t k = 0; k < num_keys; ++k) counts[k + 1] += counts[k];
  for (int64_t t = 0; t < n; ++t) {
    const int32_t k = keys[t * stride];
    static_[counts[k]++] = Pack(k, t);
  }
  n_static_ = n;
  n_appended_ = 0;
}

int64_t LshRoundOrder::Append(int32_t key) {
  REFORMER_CHECK(key >= 0 && n_appended_ < appended_cap_);
  const uint64_t item = Pack(key, size());
  // Both runs: the items before the new one are those with a smaller (key, position), i.e. (as its
  // position is the largest) those with key <= `key`.
  uint64_t* end = appended_ + n_appended_;
  uint64_t* at = std::upper_bound(appended_, end, item);
  std::memmove(at + 1, at, sizeof(uint64_t) * (end - at));
  *at = item;
  ++n_appended_;
  const int64_t static_before = std::upper_bound(static_, static_ + n_static_, item) - static_;
  return static_before + (at - appended_);
}

int64_t LshRoundOrder::StaticBefore(int64_t slot) const {
  // Smallest i such that, with j = slot - i appended items, no appended item before the cut is
  // larger than the static item after it (the cut of a merge is monotone in i).
  int64_t lo = std::max<int64_t>(0, slot - n_appended_), hi = std::min<int64_t>(slot, n_static_);
  while (lo < hi) {
    const int64_t i = (lo + hi) / 2, j = slot - i;
    if (appended_[j - 1] < static_[i]) {
      hi = i;
    } else {
      lo = i + 1;
    }
  }
  return lo;
}

void LshRoundOrder::Window(int64_t first, int64_t count, int32_t* positions) const {
  const int64_t n = size();
  REFORMER_CHECK(n > 0);
  const int64_t slot = ((first % n) + n) % n;
  int64_t i = StaticBefore(slot), j = slot - i;
  for (int64_t w = 0; w < count; ++w) {
    if (i + j == n) i = j = 0;  // wrap around (modulo the length)
    const bool take_static = j == n_appended_ || (i < n_static_ && static_[i] < appended_[j]);
    positions[w] = PositionOf(take_static ? static_[i++] : appended_[j++]);
  }
}

}  // namespace reformer
