// LSH bucketing and the stable round-major sort (engine-numerics §7.3-§7.5).
#pragma once

#include <cstdint>
#include <vector>

namespace reformer {

struct BucketSpec {
  std::vector<int64_t> factors;  // one entry for an int num_buckets
  int64_t num_hashes = 1;
  bool padding_bucket = false;  // mask has padding somewhere in the batch: NB = nb + 1
  int64_t total() const {
    int64_t nb = 1;
    for (int64_t f : factors) nb *= f;
    return nb;
  }
  int64_t rotation_half() const {
    int64_t h = 0;
    for (int64_t f : factors) h += f / 2;
    return h;
  }
  int64_t num_keys_per_round() const { return total() + (padding_bucket ? 1 : 0); }
};

// Buckets of rows [t0, t0 + rows) from their projections r[row, n * half + j] (row stride ld_r):
// keys[n * T + t] = bucket + n * NB. Positions with mask[t] == 0 get bucket nb when the padding
// bucket is in use. `mask` may be null.
void ComputeBucketKeys(const float* r, int64_t ld_r, int64_t t0, int64_t rows, int64_t seq_len,
                       const BucketSpec& spec, const uint8_t* mask, int32_t* keys);

// Stable counting sort of keys[0..n) with values in [0, num_keys): perm[s] = index at slot s.
// `counts` is scratch of num_keys + 1 ints.
void StableSortByKey(const int32_t* keys, int64_t n, int64_t num_keys, int32_t* perm, int32_t* counts);

}  // namespace reformer
