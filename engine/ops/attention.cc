#include "engine/ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/dnnl/matmul.h"
#include "engine/ops/simd_math.h"
#include "engine/ops/small_gemm.h"
#include "engine/ops/softmax.h"
#include "engine/tensor/workspace.h"

namespace reformer {
namespace {

// Rows of qk projected onto the rotations per thread-local block.
constexpr int64_t kHashRows = 64;

// Chunks handed to the OpenMP team between two polls of the cancel flag.
constexpr int64_t kChunksPerPoll = 64;

// Per-thread buffers for one block of `rows` queries against `keys` keys of width dh.
struct BlockBuffers {
  int64_t rows, keys, dh, stride;
  WsBuffer<float> mem;
  WsBuffer<int32_t> pos;  // qpos[rows] then kpos[keys]
  WsBuffer<uint8_t> kvalid;
  BlockBuffers(Workspace* ws, int64_t r, int64_t k, int64_t d, int threads)
      : rows(r), keys(k), dh(d), stride(FloatsPerThread(r, k, d)),
        mem(ws, static_cast<size_t>(threads) * stride), pos(ws, static_cast<size_t>(threads) * (r + k)),
        kvalid(ws, static_cast<size_t>(threads) * k) {}
  static int64_t FloatsPerThread(int64_t r, int64_t k, int64_t d) {
    return r * d /*q*/ + d * k /*kᵀ*/ + k * d /*v*/ + r * k /*s*/ + r * d /*o*/ + r /*lse*/ + k /*scratch*/;
  }
  static size_t Bytes(int64_t r, int64_t k, int64_t d, int threads) {
    return static_cast<size_t>(threads) *
           (sizeof(float) * FloatsPerThread(r, k, d) + sizeof(int32_t) * (r + k) + k);
  }
  struct View {
    float *q, *kt, *v, *s, *o, *lse, *scratch;
    int32_t *qpos, *kpos;
    uint8_t* kvalid;
  };
  View For(int thread) {
    View v;
    float* base = mem.data() + static_cast<int64_t>(thread) * stride;
    v.q = base;
    v.kt = v.q + rows * dh;
    v.v = v.kt + dh * keys;
    v.s = v.v + keys * dh;
    v.o = v.s + rows * keys;
    v.lse = v.o + rows * dh;
    v.scratch = v.lse + rows;
    v.qpos = pos.data() + static_cast<int64_t>(thread) * (rows + keys);
    v.kpos = v.qpos + rows;
    v.kvalid = kvalid.data() + static_cast<int64_t>(thread) * keys;
    return v;
  }
};

// One block on the calling thread: s = q · kᵀ, masks (SPEC §7.5 / §8), lse softmax, o = p · v.
void AttendBlock(const BlockBuffers::View& b, int64_t rows, int64_t keys, int64_t dh, bool causal,
                 bool self_mask) {
  SmallGemm(rows, keys, dh, b.q, dh, b.kt, keys, b.s, keys);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = b.s + i * keys;
    const int32_t qp = b.qpos[i];
    for (int64_t j = 0; j < keys; ++j) {
      const int32_t kp = b.kpos[j];
      if (!b.kvalid[j] || (causal && kp > qp)) row[j] = kMaskValue;
      if (self_mask && kp == qp) row[j] = kSelfMaskValue;
    }
    const float l = LogSumExp(row, keys, b.scratch);
    simd::ExpShiftSum(row, l, row, keys);
    b.lse[i] = l;
  }
  SmallGemm(rows, dh, keys, b.s, keys, b.v, dh, b.o, dh);
}

inline void CopyRow(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

// Writes key row `src` (dh values, optionally divided by `div`) as column `col` of kᵀ [dh, keys].
inline void StoreKeyColumn(const float* src, int64_t dh, int64_t keys, int64_t col, float* kt, float div) {
  if (div == 1.f) {
    for (int64_t d = 0; d < dh; ++d) kt[d * keys + col] = src[d];
  } else {
    for (int64_t d = 0; d < dh; ++d) kt[d * keys + col] = src[d] / div;
  }
}

int64_t WindowChunks(int64_t before, int64_t after) { return 1 + before + after; }

int Threads() { return omp_get_max_threads(); }

}  // namespace

size_t LshAttentionWorkBytes(const LshAttentionParams& p, int threads) {
  const int64_t t = p.seq_len, dh = p.head_dim;
  size_t bytes = sizeof(float) * t * dh;  // knorm
  if (t <= p.chunk) return bytes + BlockBuffers::Bytes(t, t, dh, 1);
  const int64_t nh = p.buckets.num_hashes, n = nh * t;
  const int64_t half = p.buckets.rotation_half();
  bytes += sizeof(int32_t) * (2 * n + nh * p.buckets.num_keys_per_round() + 1);  // keys, perm, counts
  const size_t hashing = sizeof(float) * threads * kHashRows * nh * half;  // projections, per thread
  size_t attend = BlockBuffers::Bytes(p.chunk, p.chunk * WindowChunks(p.before, p.after), dh, threads);
  if (nh > 1) attend += sizeof(float) * (n * dh + n);  // per-round outputs and lse
  return bytes + std::max(hashing, attend);
}

size_t LocalAttentionWorkBytes(const LocalAttentionParams& p, int threads) {
  const int64_t t = p.seq_len, dh = p.head_dim;
  if (t <= p.chunk) return BlockBuffers::Bytes(t, t, dh, 1);
  return BlockBuffers::Bytes(p.chunk, p.chunk * WindowChunks(p.before, p.after), dh, threads);
}

absl::Status LshAttentionHead(DnnlContext* /*ctx*/, Workspace* ws, const LshAttentionParams& p,
                              const float* qk, int64_t ld_qk, const float* v, int64_t ld_v,
                              const float* rotations, const uint8_t* mask, float* out,
                              int64_t ld_out, int32_t* keys_out, const CancelCheck& cancel) {
  const int64_t t_len = p.seq_len, dh = p.head_dim, c = p.chunk;
  // Shared-QK keys: knorm(u) = u / sqrt(mean(u^2) + 1e-6) / sqrt(dh)  (SPEC §7.1).
  WsBuffer<float> knorm(ws, t_len * dh);
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
#pragma omp parallel for schedule(static) if (t_len >= 256)
  for (int64_t t = 0; t < t_len; ++t) {
    const float* u = qk + t * ld_qk;
    float ss = 0.f;
    for (int64_t j = 0; j < dh; ++j) ss += u[j] * u[j];
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(dh) + 1e-6f);
    float* kr = knorm.data() + t * dh;
    for (int64_t j = 0; j < dh; ++j) kr[j] = (u[j] * inv) / sqrt_dh;
  }

  if (t_len <= c) {  // SPEC §7.2: plain attention, self mask, no hashing.
    BlockBuffers bb(ws, t_len, t_len, dh, 1);
    BlockBuffers::View b = bb.For(0);
    for (int64_t t = 0; t < t_len; ++t) {
      CopyRow(qk + t * ld_qk, b.q + t * dh, dh);
      StoreKeyColumn(knorm.data() + t * dh, dh, t_len, t, b.kt, 1.f);
      CopyRow(v + t * ld_v, b.v + t * dh, dh);
      b.qpos[t] = b.kpos[t] = static_cast<int32_t>(t);
      b.kvalid[t] = mask ? mask[t] : 1;
    }
    AttendBlock(b, t_len, t_len, dh, p.causal, /*self_mask=*/true);
    for (int64_t t = 0; t < t_len; ++t) CopyRow(b.o + t * dh, out + t * ld_out, dh);
    return absl::OkStatus();
  }

  REFORMER_CHECK(t_len % c == 0);
  const BucketSpec& spec = p.buckets;
  const int64_t nh = spec.num_hashes, n_slots = nh * t_len, half = spec.rotation_half();
  const int64_t nkeys = spec.num_keys_per_round();
  WsBuffer<int32_t> keys(ws, n_slots), perm(ws, n_slots), counts(ws, nh * nkeys + 1);
  {
    // Hash projections r = qk · R (SPEC §7.3), on the unnormalised qk, in thread-local row blocks.
    const int64_t width = nh * half;
    WsBuffer<float> rt(ws, static_cast<size_t>(Threads()) * kHashRows * width);
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
    o_rounds.Reset(ws, n_slots * dh);
    lse_rounds.Reset(ws, n_slots);
  }
  const int64_t win = WindowChunks(p.before, p.after);
  const int64_t n_chunks = n_slots / c, n_keys = win * c;
  const int threads = Threads();
  BlockBuffers bb(ws, c, n_keys, dh, threads);
  const int32_t* pm = perm.data();
  for (int64_t j0 = 0; j0 < n_chunks; j0 += kChunksPerPoll) {
    if (cancel && cancel()) return absl::CancelledError("forward cancelled");
    const int64_t j1 = std::min(n_chunks, j0 + kChunksPerPoll);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = j0; j < j1; ++j) {
      BlockBuffers::View b = bb.For(omp_get_thread_num());
      for (int64_t i = 0; i < c; ++i) {
        const int64_t pos = pm[j * c + i] % t_len;
        CopyRow(qk + pos * ld_qk, b.q + i * dh, dh);
        b.qpos[i] = static_cast<int32_t>(pos);
      }
      int64_t r = 0;
      for (int64_t off = -p.before; off <= p.after; ++off) {
        const int64_t jj = ((j + off) % n_chunks + n_chunks) % n_chunks;
        for (int64_t i = 0; i < c; ++i, ++r) {
          const int64_t pos = pm[jj * c + i] % t_len;
          StoreKeyColumn(knorm.data() + pos * dh, dh, n_keys, r, b.kt, 1.f);
          CopyRow(v + pos * ld_v, b.v + r * dh, dh);
          b.kpos[r] = static_cast<int32_t>(pos);
          b.kvalid[r] = mask ? mask[pos] : 1;
        }
      }
      AttendBlock(b, c, n_keys, dh, p.causal, /*self_mask=*/true);
      for (int64_t i = 0; i < c; ++i) {
        const int64_t k = pm[j * c + i];
        if (nh == 1) {
          CopyRow(b.o + i * dh, out + k * ld_out, dh);
        } else {
          CopyRow(b.o + i * dh, o_rounds.data() + k * dh, dh);
          lse_rounds[k] = b.lse[i];
        }
      }
    }
  }
  if (nh > 1) {
    // SPEC §7.6 / §10.1: w[n,t] = exp(lse[n,t] - logsumexp_n(lse[., t])), in float32.
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < t_len; ++t) {
      float l[64];
      float m = -INFINITY;
      for (int64_t n = 0; n < nh; ++n) {
        l[n] = lse_rounds[n * t_len + t];
        m = std::max(m, l[n]);
      }
      float sum = 0.f;
      for (int64_t n = 0; n < nh; ++n) sum += std::exp(l[n] - m);
      const float total = m + std::log(sum);
      float* dst = out + t * ld_out;
      for (int64_t jd = 0; jd < dh; ++jd) dst[jd] = 0.f;
      for (int64_t n = 0; n < nh; ++n) {
        const float w = std::exp(l[n] - total);
        const float* src = o_rounds.data() + (n * t_len + t) * dh;
        for (int64_t jd = 0; jd < dh; ++jd) dst[jd] += src[jd] * w;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status LocalAttentionHead(DnnlContext* /*ctx*/, Workspace* ws, const LocalAttentionParams& p,
                                const float* q, int64_t ld_q, const float* k, int64_t ld_k,
                                const float* v, int64_t ld_v, const uint8_t* mask, float* out,
                                int64_t ld_out, const CancelCheck& cancel) {
  const int64_t t_len = p.seq_len, dh = p.head_dim, c = p.chunk;
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  if (t_len <= c) {
    BlockBuffers bb(ws, t_len, t_len, dh, 1);
    BlockBuffers::View b = bb.For(0);
    for (int64_t t = 0; t < t_len; ++t) {
      CopyRow(q + t * ld_q, b.q + t * dh, dh);
      StoreKeyColumn(k + t * ld_k, dh, t_len, t, b.kt, sqrt_dh);
      CopyRow(v + t * ld_v, b.v + t * dh, dh);
      b.qpos[t] = b.kpos[t] = static_cast<int32_t>(t);
      b.kvalid[t] = mask ? mask[t] : 1;
    }
    AttendBlock(b, t_len, t_len, dh, p.causal, /*self_mask=*/false);
    for (int64_t t = 0; t < t_len; ++t) CopyRow(b.o + t * dh, out + t * ld_out, dh);
    return absl::OkStatus();
  }
  REFORMER_CHECK(t_len % c == 0);
  const int64_t win = WindowChunks(p.before, p.after);
  const int64_t n_chunks = t_len / c, n_keys = win * c;
  const int threads = Threads();
  BlockBuffers bb(ws, c, n_keys, dh, threads);
  for (int64_t j0 = 0; j0 < n_chunks; j0 += kChunksPerPoll) {
    if (cancel && cancel()) return absl::CancelledError("forward cancelled");
    const int64_t j1 = std::min(n_chunks, j0 + kChunksPerPoll);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = j0; j < j1; ++j) {
      BlockBuffers::View b = bb.For(omp_get_thread_num());
      for (int64_t i = 0; i < c; ++i) {
        CopyRow(q + (j * c + i) * ld_q, b.q + i * dh, dh);
        b.qpos[i] = static_cast<int32_t>(j * c + i);
      }
      int64_t r = 0;
      for (int64_t off = -p.before; off <= p.after; ++off) {
        const int64_t jj = ((j + off) % n_chunks + n_chunks) % n_chunks;
        for (int64_t i = 0; i < c; ++i, ++r) {
          const int64_t pos = jj * c + i;
          StoreKeyColumn(k + pos * ld_k, dh, n_keys, r, b.kt, sqrt_dh);
          CopyRow(v + pos * ld_v, b.v + r * dh, dh);
          b.kpos[r] = static_cast<int32_t>(pos);
          b.kvalid[r] = mask ? mask[pos] : 1;
        }
      }
      AttendBlock(b, c, n_keys, dh, p.causal, /*self_mask=*/false);
      for (int64_t i = 0; i < c; ++i) CopyRow(b.o + i * dh, out + (j * c + i) * ld_out, dh);
    }
  }
  return absl::OkStatus();
}

}  // namespace reformer
