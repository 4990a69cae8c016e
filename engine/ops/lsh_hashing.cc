#include "engine/ops/lsh_hashing.h"

#include <cstring>

#include "engine/ops/kernels/kernel_table.h"

namespace reformer {

void ComputeBucketKeys(const float* r, int64_t ld_r, int64_t t0, int64_t rows, int64_t seq_len,
                       const BucketSpec& spec, const uint8_t* mask, int32_t* keys) {
  const int64_t nb = spec.total();
  const int64_t half_total = spec.rotation_half();
  const int64_t nkeys = spec.num_keys_per_round();
  // engine-numerics §9.4: ties to the lowest index
  const auto argmax_signed = kernels::Active().argmax_signed;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t t = t0 + i;
    const float* row = r + i * ld_r;
    const bool pad = spec.padding_bucket && mask != nullptr && mask[t] == 0;
    for (int64_t n = 0; n < spec.num_hashes; ++n) {
      int64_t bucket = 0;
      if (pad) {
        bucket = nb;
      } else {
        const float* rn = row + n * half_total;
        int64_t offset = 0, prod = 1;
        for (int64_t f : spec.factors) {
          const int64_t half = f / 2;
          bucket += prod * argmax_signed(rn + offset, half);
          offset += half;
          prod *= f;
        }
      }
      keys[n * seq_len + t] = static_cast<int32_t>(bucket + n * nkeys);
    }
  }
}

void StableSortByKey(const int32_t* keys, int64_t n, int64_t num_keys, int32_t* perm, int32_t* counts) {
  std::memset(counts, 0, sizeof(int32_t) * (num_keys + 1));
  for (int64_t i = 0; i < n; ++i) ++counts[keys[i] + 1];
  for (int64_t k = 0; k < num_keys; ++k) counts[k + 1] += counts[k];
  for (int64_t i = 0; i < n; ++i) perm[counts[keys[i]]++] = static_cast<int32_t>(i);
}

}  // namespace reformer
