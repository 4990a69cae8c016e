#include "engine/model/decode_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/base/check.h"
#include "engine/ops/cached_attention.h"
#include "engine/ops/lsh_hashing.h"
#include "engine/ops/small_gemm.h"

namespace reformer {
namespace {

int64_t LshWindow(const ReformerConfig& c) {
  return c.lsh_attn_chunk_length * (1 + c.lsh_num_chunks_before + c.lsh_num_chunks_after);
}

BucketSpec Spec(const ReformerConfig& c, bool padding_bucket) {
  BucketSpec s;
  s.factors = c.num_buckets;
  s.num_hashes = c.num_hashes;
  s.padding_bucket = padding_bucket;
  return s;
}

// Attention of q over the positions pos[0..n) of `head` (cached rows knorm(qk) | v, from
// k_rows[off]), self mask on L. Returns the lse.
float AttendLshPositions(DecodeCache* cache, int64_t layer, int64_t head, int64_t L, const float* q,
                         const int32_t* pos, int64_t n, int64_t off, int64_t dh, StepScratch* s, float* out) {
  for (int64_t j = 0; j < n; ++j) {
    const float* row = cache->Row(layer, pos[j], head);
    s->k_rows[off + j] = row;
    s->v_rows[off + j] = row + dh;
  }
  return AttendOneQuery(q, s->k_rows.data() + off, s->v_rows.data() + off, pos, n, dh, static_cast<int32_t>(L),
                        s->scores.data(), out);
}

// The step whose keys reach a chunk hashes all L + 1 positions (no padding bucket: HF's step has
// no attention mask) into the head's round orders. Returns the largest sort key.
int64_t HashAll(const ReformerConfig& c, DecodeCache* cache, int64_t layer, int64_t head, int64_t L,
                const float* rotations, StepScratch* s) {
  const int64_t rows = L + 1, nh = c.num_hashes, nb = c.total_buckets();
  const BucketSpec spec = Spec(c, false);
  const int64_t width = nh * spec.rotation_half();
  const int64_t ld = c.num_attention_heads * c.attention_head_size;
  SmallGemm(rows, width, c.attention_head_size, cache->RawQk(layer, 0, head), ld, rotations, width,
            s->hash.data(), width);
  int32_t* keys = s->bucket_keys.data();
  ComputeBucketKeys(s->hash.data(), width, 0, rows, rows, spec, nullptr, keys);
  int64_t max_key = -1;
  for (int64_t n = 0; n < nh; ++n) {
    for (int64_t t = 0; t < rows; ++t) {
      max_key = std::max<int64_t>(max_key, keys[n * rows + t]);
      keys[n * rows + t] -= static_cast<int32_t>(n * nb);
    }
    cache->layer(layer).orders[head * nh + n].Reset(keys + n * rows, 1, rows, RelativeKeyRange(c),
                                                    s->counts.data());
  }
  return max_key;
}

}  // namespace

void StepScratch::Reserve(const ReformerConfig& c) {
  const int64_t dh = c.attention_head_size, nh = c.num_hashes;
  const int64_t plain = c.lsh_attn_chunk_length + 1;  // keys of a plain LSH step, at most
  const int64_t local = (c.local_num_chunks_before + 1) * c.local_attn_chunk_length;
  const int64_t rows = std::max({nh * LshWindow(c), plain, local});
  scores.resize(rows);
  k_rows.resize(rows);
  v_rows.resize(rows);
  pos.resize(rows);
  rounds_out.resize(nh * dh);
  lse.resize(nh);
  hash.resize(plain * nh * (c.rotation_size() / 2 + 1));
  bucket_keys.resize(plain * nh);
  counts.resize(RelativeKeyRange(c) + 1);
}

size_t StepScratch::bytes() const {
  return sizeof(float) * (scores.size() + rounds_out.size() + lse.size() + hash.size()) +
         sizeof(void*) * (k_rows.size() + v_rows.size()) +
         sizeof(int32_t) * (pos.size() + bucket_keys.size() + counts.size());
}

void LocalStepHead(const ReformerConfig& c, DecodeCache* cache, int64_t layer, int64_t head, int64_t L,
                   const float* q, StepScratch* s, float* out) {
  const int64_t chunk = c.local_attn_chunk_length, dh = c.attention_head_size;
  // HF: states[start:] ++ new, start = ((L // c) - before) * c with Python's slice semantics.
  int64_t start = ((L / chunk) - c.local_num_chunks_before) * chunk;
  if (start < 0) start = std::max<int64_t>(0, L + start);
  const int64_t n = L + 1 - start;
  for (int64_t j = 0; j < n; ++j) {
    const float* row = cache->Row(layer, start + j, head);
    s->k_rows[j] = row;
    s->v_rows[j] = row + dh;
    s->pos[j] = static_cast<int32_t>(start + j);
  }
  AttendOneQuery(q, s->k_rows.data(), s->v_rows.data(), s->pos.data(), n, dh, -1, s->scores.data(), out);
}

int64_t LshStepHead(const ReformerConfig& c, DecodeCache* cache, int64_t layer, int64_t head, int64_t L,
                    const float* q, const float* rotations, bool increase, StepScratch* s, float* out) {
  const int64_t dh = c.attention_head_size, nh = c.num_hashes, chunk = c.lsh_attn_chunk_length;
  DecodeCache::Layer& l = cache->layer(layer);
  if (!l.hashed) {
    // Plain attention over the cache and the new token, self mask only (engine-numerics §13).
    for (int64_t j = 0; j <= L; ++j) s->pos[j] = static_cast<int32_t>(j);
    AttendLshPositions(cache, layer, head, L, q, s->pos.data(), L + 1, 0, dh, s, out);
    const bool start_hashing = L + 1 >= chunk && rotations != nullptr && L < cache->plan().raw_rows;  // null: no later step can use keys
    return start_hashing ? HashAll(c, cache, layer, head, L, rotations, s) : -1;
  }
  // Hash the new token; offsets n * (nb + 1) when HF's increase_num_buckets test fired.
  const BucketSpec spec = Spec(c, increase);
  const int64_t width = nh * spec.rotation_half(), nb = c.total_buckets(), w = LshWindow(c);
  SmallGemm(1, width, dh, q, dh, rotations, width, s->hash.data(), width);
  int32_t* keys = s->bucket_keys.data();
  ComputeBucketKeys(s->hash.data(), width, 0, 1, 1, spec, nullptr, keys);
  int64_t max_key = -1;
  for (int64_t n = 0; n < nh; ++n) {
    max_key = std::max<int64_t>(max_key, keys[n]);
    // Its slot in the round's stable order, then the chunk window around it (modulo L + 1).
    const int64_t slot = l.orders[head * nh + n].Append(keys[n] - static_cast<int32_t>(n * nb));
    const int64_t first = (slot / chunk - c.lsh_num_chunks_before) * chunk;
    int32_t* pos = s->pos.data() + n * w;
    l.orders[head * nh + n].Window(first, w, pos);
    s->lse[n] = AttendLshPositions(cache, layer, head, L, q, pos, w, n * w, dh, s, s->rounds_out.data() + n * dh);
  }
  if (nh == 1) {
    std::memcpy(out, s->rounds_out.data(), sizeof(float) * dh);
  } else {
    CombineRounds(s->rounds_out.data(), s->lse.data(), nh, dh, out);
  }
  return max_key;
}

}  // namespace reformer
