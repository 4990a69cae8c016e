#include "engine/ops/lsh_hashing.h"

#include <immintrin.h>

#include <cstring>

#include "engine/ops/simd_math.h"

namespace reformer {
namespace {

// First index of `value` in x[0..n) (which holds it).
inline int64_t FirstIndexOf(const float* x, int64_t n, float value) {
  const __m256 v = _mm256_set1_ps(value);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const int bits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), v, _CMP_EQ_OQ));
    if (bits != 0) return i + __builtin_ctz(static_cast<unsigned>(bits));
  }
  for (; i < n; ++i)
    if (x[i] == value) return i;
  return 0;
}

// argmax over concat(x, -x) for x of length `half`, ties to the lowest index (SPEC §10.4): the
// first maximum of x when max(x) >= -min(x), else half + the first minimum of x.
inline int64_t ArgmaxSigned(const float* x, int64_t half) {
  float mx = x[0], mn = x[0];
  int64_t i = 0;
  if (half >= 8) {
    __m256 vmax = _mm256_loadu_ps(x), vmin = vmax;
    for (i = 8; i + 8 <= half; i += 8) {
      const __m256 y = _mm256_loadu_ps(x + i);
      vmax = _mm256_max_ps(vmax, y);
      vmin = _mm256_min_ps(vmin, y);
    }
    mx = simd::HorizontalMax(vmax);
    mn = simd::HorizontalMin(vmin);
  }
  for (; i < half; ++i) {
    mx = x[i] > mx ? x[i] : mx;
    mn = x[i] < mn ? x[i] : mn;
  }
  if (mx >= -mn) return FirstIndexOf(x, half, mx);
  return half + FirstIndexOf(x, half, mn);
}

}  // namespace

void ComputeBucketKeys(const float* r, int64_t ld_r, int64_t t0, int64_t rows, int64_t seq_len,
                       const BucketSpec& spec, const uint8_t* mask, int32_t* keys) {
  const int64_t nb = spec.total();
  const int64_t half_total = spec.rotation_half();
  const int64_t nkeys = spec.num_keys_per_round();
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
          bucket += prod * ArgmaxSigned(rn + offset, half);
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
