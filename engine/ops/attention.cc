#include "engine/ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/small_gemm.h"
#include "engine/tensor/workspace.h"

namespace reformer {
namespace {

// Rows of qk projected onto the rotations per thread-local block.
constexpr int64_t kHashRows = 64;

// Chunks handed to the OpenMP team between two polls of the cancel flag.
constexpr int64_t kChunksPerPoll = 64;

int64_t Align64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// Per-thread scratch of one attention block: `rows` queries against `keys` keys. Queries, keys,
// values and outputs are addressed through row pointers (see small_gemm.h).
class BlockScratch {
 public:
  BlockScratch(Workspace* ws, int64_t rows, int64_t keys, int64_t dh, int threads)
      : rows_(rows), keys_(keys), dh_(dh), stride_(BytesPerThread(rows, keys, dh)),
        mem_(ws, static_cast<size_t>(threads) * stride_, kUninitialized) {}

  static int64_t BytesPerThread(int64_t rows, int64_t keys, int64_t dh) {
    return Align64(sizeof(float) * rows * keys) + Align64(sizeof(float) * dh * keys) +
           Align64(sizeof(float) * (2 * rows + keys)) + Align64(sizeof(void*) * (2 * rows + 2 * keys)) +
           Align64(sizeof(int32_t) * (rows + 2 * keys));
  }
  static size_t Bytes(int64_t rows, int64_t keys, int64_t dh, int threads) {
    return static_cast<size_t>(threads) * BytesPerThread(rows, keys, dh);
  }

  struct View {
    float* s;           // [rows, keys] scores, then unnormalised probabilities
    float* kt;          // [dh, keys]: the scaled keys transposed (QKᵀ as a broadcast product), or
                        // [keys, dh] the scaled key rows (dot_rows)
    float* lse;         // [rows]
    float* scale;       // [rows]
    float* kmul;        // [keys]: each key row's multiplier (then divided by AttendBlock's key_div)
    const float** q;    // [rows]
    float** out;        // [rows]
    const float** k;    // [keys]
    const float** v;    // [keys]
    int32_t* qpos;      // [rows]
    int32_t* kpos;      // [keys]
    int32_t* kvalid;    // [keys]: -1 real key, 0 padding
  };
  View For(int thread) {
    uint8_t* base = mem_.data() + static_cast<int64_t>(thread) * stride_;
    View v;
    v.s = reinterpret_cast<float*>(base);
    base += Align64(sizeof(float) * rows_ * keys_);
    v.kt = reinterpret_cast<float*>(base);
    base += Align64(sizeof(float) * dh_ * keys_);
    v.lse = reinterpret_cast<float*>(base);
    v.scale = v.lse + rows_;
    v.kmul = v.scale + rows_;
    base += Align64(sizeof(float) * (2 * rows_ + keys_));
    v.q = reinterpret_cast<const float**>(base);
    v.k = v.q + rows_;
    v.v = v.k + keys_;
    v.out = reinterpret_cast<float**>(base + sizeof(void*) * (rows_ + 2 * keys_));
    base += Align64(sizeof(void*) * (2 * rows_ + 2 * keys_));
    v.qpos = reinterpret_cast<int32_t*>(base);
    v.kpos = v.qpos + rows_;
    v.kvalid = v.kpos + keys_;
    return v;
  }

 private:
  int64_t rows_, keys_, dh_, stride_;
  WsBuffer<uint8_t> mem_;
};

// Score rows are masked (engine-numerics §7.6 / §8: padding keys and, when causal, later keys get
// MASK; in LSH attention the query's own position gets SELF) and turned into exp(s - max) in place
// by KernelTable::masked_softmax_row. lse = max + log(Σ exp(s - max)) in float32 as torch computes
// it; the probabilities exp(s - lse) are then exp(s - max) · exp(max - lse), so `scale` =
// exp(max - lse). A fully masked row has lse == max == MASK exactly and scale 1
// (engine-numerics §9.2).
static_assert(kMaskValue == -1e9f && kSelfMaskValue == -1e5f, "kernels_impl.inc uses these values");

// The block's keys, scaled (key r: (k[r] · kmul[r]) / key_div, exactly as scale_div rounds it):
// transposed into kt when the scores go through packed keys, else as rows in kt (b.k then
// points at them).
void ScaleKeys(const kernels::KernelTable& kt, const BlockScratch::View& b, int64_t keys, int64_t dh,
               float key_div) {
  if (kt.scores_via_packed_keys) {
    kt.pack_transposed(keys, dh, b.k, b.kmul, key_div, b.kt, keys);
    return;
  }
  for (int64_t r = 0; r < keys; ++r) {
    kt.scale_div(b.k[r], dh, b.kmul[r], key_div, b.kt + r * dh);
    b.k[r] = b.kt + r * dh;
  }
}

// One block on the calling thread: scores, masks, softmax, output rows; kRowGroup query rows at a
// time, so that their scores stay in L1 from the product with the keys to the one with the values.
constexpr int64_t kRowGroup = 12;
void AttendBlock(const BlockScratch::View& b, int64_t rows, int64_t keys, int64_t dh, float key_div, bool causal,
                 bool self_mask) {
  const kernels::KernelTable& kt = kernels::Active();
  const bool packed = kt.scores_via_packed_keys;
  ScaleKeys(kt, b, keys, dh, key_div);
  for (int64_t i0 = 0; i0 < rows; i0 += kRowGroup) {
    const int64_t n = std::min(kRowGroup, rows - i0);
    float* s = b.s + i0 * keys;
    if (packed) kt.gemm_arows(n, keys, dh, b.q + i0, b.kt, keys, s, keys);
    else kt.dot_rows(n, keys, dh, b.q + i0, b.k, s, keys);
    for (int64_t i = i0; i < i0 + n; ++i)
      kt.masked_softmax_row(b.s + i * keys, keys, b.qpos[i], b.kpos, b.kvalid, causal, self_mask, &b.lse[i],
                            &b.scale[i]);
    GemmRowsOut(n, dh, keys, s, keys, b.v, b.scale + i0, b.out + i0);
  }
}

inline int32_t KeyValid(const uint8_t* mask, int64_t pos) { return (mask == nullptr || mask[pos]) ? -1 : 0; }

int64_t WindowChunks(int64_t before, int64_t after) { return 1 + before + after; }

// Asks for a block's rows before its products read them: in LSH attention they are scattered over
// the sequence (sorted by bucket), and requesting them all at once overlaps their cache misses.
void PrefetchRows(const float* const* rows, int64_t n, int64_t width) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t x = 0; x < width; x += 64 / sizeof(float)) __builtin_prefetch(rows[r] + x, 0, 3);
}

int Threads() { return omp_get_max_threads(); }

// Keys as attention reads them: row t is (k[t] · mul[t]) / div (mul null = 1), scaled as the
// block packs them (engine-numerics §7.1, §8).
struct ScaledKeys {
  const float* k;
  int64_t ld;
  const float* mul;
  float div;
};

// Fills the query rows [0, t_len) of a plain (un-chunked) block and attends.
void AttendAll(BlockScratch* bs, int64_t t_len, int64_t dh, const float* q, int64_t ld_q, const ScaledKeys& k,
               const float* v, int64_t ld_v, const uint8_t* mask, float* out, int64_t ld_out, bool causal,
               bool self_mask) {
  BlockScratch::View b = bs->For(0);
  for (int64_t t = 0; t < t_len; ++t) {
    b.q[t] = q + t * ld_q;
    b.k[t] = k.k + t * k.ld;
    b.kmul[t] = k.mul ? k.mul[t] : 1.f;
    b.v[t] = v + t * ld_v;
    b.out[t] = out + t * ld_out;
    b.qpos[t] = b.kpos[t] = static_cast<int32_t>(t);
    b.kvalid[t] = KeyValid(mask, t);
  }
  AttendBlock(b, t_len, t_len, dh, k.div, causal, self_mask);
}

// The chunked attention both kinds share (engine-numerics §7.5-§7.6, §8): slot s of the (for LSH:
// sorted) sequence is position pos_of(s); chunk j's queries attend to the keys of chunks j - before
// ... j + after, circularly. out_of(slot, pos) is where a query's output row goes, done(j, view)
// runs after chunk j. Chunks run on the OpenMP team; `cancel` is polled every kChunksPerPoll chunks.
template <class PosOf, class OutOf, class Done>
absl::Status AttendChunks(BlockScratch* bs, int64_t n_slots, int64_t c, int64_t before, int64_t after,
                          int64_t dh, bool causal, bool self_mask, PosOf pos_of, const float* q,
                          int64_t ld_q, const ScaledKeys& k, const float* v, int64_t ld_v,
                          const uint8_t* mask, OutOf out_of, Done done, const CancelCheck& cancel) {
  const int64_t n_chunks = n_slots / c, n_keys = WindowChunks(before, after) * c;
  for (int64_t j0 = 0; j0 < n_chunks; j0 += kChunksPerPoll) {
    if (cancel && cancel()) return absl::CancelledError("forward cancelled");
    const int64_t j1 = std::min(n_chunks, j0 + kChunksPerPoll);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = j0; j < j1; ++j) {
      BlockScratch::View b = bs->For(omp_get_thread_num());
      for (int64_t i = 0; i < c; ++i) {
        const int64_t slot = j * c + i, pos = pos_of(slot);
        b.q[i] = q + pos * ld_q;
        b.out[i] = out_of(slot, pos);
        b.qpos[i] = static_cast<int32_t>(pos);
      }
      int64_t r = 0;
      for (int64_t off = -before; off <= after; ++off) {
        const int64_t jj = ((j + off) % n_chunks + n_chunks) % n_chunks;
        for (int64_t i = 0; i < c; ++i, ++r) {
          const int64_t pos = pos_of(jj * c + i);
          b.k[r] = k.k + pos * k.ld;
          b.kmul[r] = k.mul ? k.mul[pos] : 1.f;
          b.v[r] = v + pos * ld_v;
          b.kpos[r] = static_cast<int32_t>(pos);
          b.kvalid[r] = KeyValid(mask, pos);
        }
      }
      PrefetchRows(b.k, n_keys, dh);
      PrefetchRows(b.v, n_keys, dh);
      PrefetchRows(b.q, c, dh);
      AttendBlock(b, c, n_keys, dh, k.div, causal, self_mask);
      done(j, b);
    }
  }
  return absl::OkStatus();
}

// engine-numerics §7.7 / §9.1: out[t] = Σ_n o[n, t] · w[n, t], w[n, t] = exp(lse[n, t] -
// logsumexp_n(lse[., t])), in float32, for any number of rounds (o is [nh, T, dh], lse [nh, T],
// round-major).
void CombineRounds(const float* o, const float* lse, int64_t nh, int64_t t_len, int64_t dh, float* out,
                   int64_t ld_out) {
  const auto axpy = kernels::Active().axpy;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < t_len; ++t) {
    float m = -INFINITY;
    for (int64_t n = 0; n < nh; ++n) m = std::max(m, lse[n * t_len + t]);
    float sum = 0.f;
    for (int64_t n = 0; n < nh; ++n) sum += std::exp(lse[n * t_len + t] - m);
    const float total = m + std::log(sum);
    float* dst = out + t * ld_out;
    for (int64_t jd = 0; jd < dh; ++jd) dst[jd] = 0.f;
    for (int64_t n = 0; n < nh; ++n) axpy(dh, std::exp(lse[n * t_len + t] - total), o + (n * t_len + t) * dh, dst);
  }
}

}  // namespace

size_t LshAttentionWorkBytes(const LshAttentionParams& p, int threads) {
  const int64_t t = p.seq_len, dh = p.head_dim;
  size_t bytes = sizeof(float) * t;  // the keys' normalising factors
  if (t <= p.chunk) return bytes + BlockScratch::Bytes(t, t, dh, 1);
  const int64_t nh = p.buckets.num_hashes, n = nh * t;
  const int64_t half = p.buckets.rotation_half();
  bytes += sizeof(int32_t) * (2 * n + nh * p.buckets.num_keys_per_round() + 1);  // keys, perm, counts
  const size_t hashing = sizeof(float) * threads * kHashRows * nh * half;  // projections, per thread
  size_t attend = BlockScratch::Bytes(p.chunk, p.chunk * WindowChunks(p.before, p.after), dh, threads);
  if (nh > 1) attend += sizeof(float) * (n * dh + n);  // per-round outputs and lse
  return bytes + std::max(hashing, attend);
}

size_t LocalAttentionWorkBytes(const LocalAttentionParams& p, int threads) {
  const int64_t t = p.seq_len, dh = p.head_dim;
  if (t <= p.chunk) return BlockScratch::Bytes(t, t, dh, 1);
  return BlockScratch::Bytes(p.chunk, p.chunk * WindowChunks(p.before, p.after), dh, threads);
}

absl::Status LshAttentionHead(DnnlContext* /*ctx*/, Workspace* ws, const LshAttentionParams& p,
                              const float* qk, int64_t ld_qk, const float* v, int64_t ld_v,
                              const float* rotations, const uint8_t* mask, float* out,
                              int64_t ld_out, int32_t* keys_out, const CancelCheck& cancel) {
  const int64_t t_len = p.seq_len, dh = p.head_dim, c = p.chunk;
  // Shared-QK keys: knorm(u) = u / sqrt(mean(u^2) + 1e-6) / sqrt(dh)  (engine-numerics §7.1): the
  // per-position factor here, applied as the blocks pack their keys.
  WsBuffer<float> inv(ws, t_len, kUninitialized);
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  const kernels::KernelTable& kt = kernels::Active();
#pragma omp parallel for schedule(static) if (t_len >= 256)
  for (int64_t t = 0; t < t_len; ++t)
    inv[t] = 1.f / std::sqrt(kt.sum_of_squares(qk + t * ld_qk, dh) / static_cast<float>(dh) + 1e-6f);
  const ScaledKeys knorm{qk, ld_qk, inv.data(), sqrt_dh};

  if (t_len <= c) {  // engine-numerics §7.2: plain attention, self mask, no hashing.
    BlockScratch bs(ws, t_len, t_len, dh, 1);
    AttendAll(&bs, t_len, dh, qk, ld_qk, knorm, v, ld_v, mask, out, ld_out, p.causal, /*self_mask=*/true);
    return absl::OkStatus();
  }

  REFORMER_CHECK(t_len % c == 0);
  const BucketSpec& spec = p.buckets;
  const int64_t nh = spec.num_hashes, n_slots = nh * t_len, half = spec.rotation_half();
  const int64_t nkeys = spec.num_keys_per_round();
  WsBuffer<int32_t> keys(ws, n_slots, kUninitialized), perm(ws, n_slots, kUninitialized),
      counts(ws, nh * nkeys + 1, kUninitialized);
  {
    // Hash projections r = qk · R (engine-numerics §7.3), on the unnormalised qk, in thread-local
    // row blocks.
    const int64_t width = nh * half;
    WsBuffer<float> rt(ws, static_cast<size_t>(Threads()) * kHashRows * width, kUninitialized);
#pragma omp parallel for schedule(static)
    for (int64_t t0 = 0; t0 < t_len; t0 += kHashRows) {
      const int64_t rows = std::min(kHashRows, t_len - t0);
      float* r = rt.data() + static_cast<int64_t>(omp_get_thread_num()) * kHashRows * width;
      SmallGemm(rows, width, dh, qk + t0 * ld_qk, ld_qk, rotations, width, r, width);
      ComputeBucketKeys(r, width, t0, rows, t_len, spec, mask, keys.data());
    }
  }
  if (keys_out) std::memcpy(keys_out, keys.data(), sizeof(int32_t) * n_slots);
  StableSortByKey(keys.data(), n_slots, nh * nkeys, perm.data(), counts.data());

  WsBuffer<float> o_rounds, lse_rounds;
  if (nh > 1) {
    o_rounds.Reset(ws, n_slots * dh, kUninitialized);
    lse_rounds.Reset(ws, n_slots, kUninitialized);
  }
  BlockScratch bs(ws, c, WindowChunks(p.before, p.after) * c, dh, Threads());
  const int32_t* pm = perm.data();
  // Sorted slot s holds flat index pm[s] = round * T + position; outputs of several rounds go to
  // o_rounds (row = flat index) with their lse, to be combined below.
  RETURN_IF_ERROR(AttendChunks(
      &bs, n_slots, c, p.before, p.after, dh, p.causal, /*self_mask=*/true,
      [pm, t_len](int64_t s) { return pm[s] % t_len; }, qk, ld_qk, knorm, v, ld_v, mask,
      [&](int64_t s, int64_t pos) { return nh == 1 ? out + pos * ld_out : o_rounds.data() + pm[s] * dh; },
      [&](int64_t j, const BlockScratch::View& b) {
        if (nh > 1)
          for (int64_t i = 0; i < c; ++i) lse_rounds[pm[j * c + i]] = b.lse[i];
      },
      cancel));
  if (nh > 1) CombineRounds(o_rounds.data(), lse_rounds.data(), nh, t_len, dh, out, ld_out);
  return absl::OkStatus();
}

absl::Status LocalAttentionHead(DnnlContext* /*ctx*/, Workspace* ws, const LocalAttentionParams& p,
                                const float* q, int64_t ld_q, const float* k, int64_t ld_k,
                                const float* v, int64_t ld_v, const uint8_t* mask, float* out,
                                int64_t ld_out, const CancelCheck& cancel) {
  const int64_t t_len = p.seq_len, dh = p.head_dim, c = p.chunk;
  // Keys divided by sqrt(dh) (engine-numerics §8, §9.6), as the blocks pack them.
  const ScaledKeys ks{k, ld_k, nullptr, static_cast<float>(std::sqrt(static_cast<double>(dh)))};

  if (t_len <= c) {
    BlockScratch bs(ws, t_len, t_len, dh, 1);
    AttendAll(&bs, t_len, dh, q, ld_q, ks, v, ld_v, mask, out, ld_out, p.causal, /*self_mask=*/false);
    return absl::OkStatus();
  }
  REFORMER_CHECK(t_len % c == 0);
  BlockScratch bs(ws, c, WindowChunks(p.before, p.after) * c, dh, Threads());
  return AttendChunks(
      &bs, t_len, c, p.before, p.after, dh, p.causal, /*self_mask=*/false, [](int64_t s) { return s; }, q,
      ld_q, ks, v, ld_v, mask, [&](int64_t, int64_t pos) { return out + pos * ld_out; },
      [](int64_t, const BlockScratch::View&) {}, cancel);
}

}  // namespace reformer
