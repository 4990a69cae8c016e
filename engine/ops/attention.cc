#include "engine/ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/dnnl/matmul.h"
#include "engine/ops/simd_math.h"
#include "engine/ops/softmax.h"
#include "engine/tensor/workspace.h"

namespace reformer {
namespace {

// Rows of qk projected onto the rotations per matmul call (a multiple of the chunk).
int64_t HashRows(int64_t seq_len, int64_t chunk) {
  int64_t rows = std::max<int64_t>(chunk, (512 / chunk) * chunk);
  return std::min(rows, seq_len);
}

// Block buffers for `rows` queries against `keys` keys of width dh.
struct BlockBuffers {
  WsBuffer<float> q, k, v, s, o, lse, scratch;
  WsBuffer<int32_t> qpos, kpos;
  WsBuffer<uint8_t> kvalid;
  BlockBuffers(Workspace* ws, int64_t rows, int64_t keys, int64_t dh, int threads)
      : q(ws, rows * dh), k(ws, keys * dh), v(ws, keys * dh), s(ws, rows * keys), o(ws, rows * dh),
        lse(ws, rows), scratch(ws, static_cast<size_t>(threads) * keys), qpos(ws, rows),
        kpos(ws, keys), kvalid(ws, keys) {}
  static size_t Bytes(int64_t rows, int64_t keys, int64_t dh, int threads) {
    return sizeof(float) * (rows * dh + 2 * keys * dh + rows * keys + rows * dh + rows +
                            static_cast<size_t>(threads) * keys) +
           sizeof(int32_t) * (rows + keys) + keys;
  }
};

// scores[rows, keys] = q · kᵀ, masks, lse softmax, o = p · v.
absl::Status AttendBlock(DnnlContext* ctx, BlockBuffers& b, int64_t rows, int64_t keys, int64_t dh,
                         bool causal, bool self_mask) {
  MatmulCall qk;
  qk.m = rows;
  qk.k = dh;
  qk.n = keys;
  qk.src = b.q.data();
  qk.lda = dh;
  qk.b = b.k.data();
  qk.b_stride_k = 1;
  qk.b_stride_n = dh;
  qk.dst = b.s.data();
  qk.ldc = keys;
  RETURN_IF_ERROR(ctx->Matmul(qk));
  float* s = b.s.data();
  const int32_t* qpos = b.qpos.data();
  const int32_t* kpos = b.kpos.data();
  const uint8_t* kvalid = b.kvalid.data();
  float* lse = b.lse.data();
  float* scratch = b.scratch.data();
#pragma omp parallel for schedule(static) if (rows * keys >= 16384)
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * keys;
    const int32_t qp = qpos[i];
    for (int64_t j = 0; j < keys; ++j) {
      const int32_t kp = kpos[j];
      if (!kvalid[j] || (causal && kp > qp)) row[j] = kMaskValue;
      if (self_mask && kp == qp) row[j] = kSelfMaskValue;
    }
    float* tmp = scratch + static_cast<int64_t>(omp_get_thread_num()) * keys;
    const float l = LogSumExp(row, keys, tmp);
    simd::ExpShiftSum(row, l, row, keys);
    lse[i] = l;
  }
  MatmulCall pv;
  pv.m = rows;
  pv.k = keys;
  pv.n = dh;
  pv.src = s;
  pv.lda = keys;
  pv.b = b.v.data();
  pv.b_stride_k = dh;
  pv.b_stride_n = 1;
  pv.dst = b.o.data();
  pv.ldc = dh;
  return ctx->Matmul(pv);
}

inline void CopyRow(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

int64_t WindowChunks(int64_t before, int64_t after) { return 1 + before + after; }

}  // namespace

size_t LshAttentionWorkBytes(const LshAttentionParams& p, int threads) {
  const int64_t t = p.seq_len, dh = p.head_dim;
  size_t bytes = sizeof(float) * t * dh;  // knorm
  if (t <= p.chunk) return bytes + BlockBuffers::Bytes(t, t, dh, threads);
  const int64_t nh = p.buckets.num_hashes, n = nh * t;
  const int64_t half = p.buckets.rotation_half();
  bytes += sizeof(int32_t) * (2 * n + nh * p.buckets.num_keys_per_round() + 1);  // keys, perm, counts
  const size_t hashing = sizeof(float) * HashRows(t, p.chunk) * nh * half;  // projections tile
  size_t attend = BlockBuffers::Bytes(p.chunk, p.chunk * WindowChunks(p.before, p.after), dh, threads);
  if (nh > 1) attend += sizeof(float) * (n * dh + n);  // per-round outputs and lse
  return bytes + std::max(hashing, attend);
}

size_t LocalAttentionWorkBytes(const LocalAttentionParams& p, int threads) {
  const int64_t t = p.seq_len, dh = p.head_dim;
  if (t <= p.chunk) return BlockBuffers::Bytes(t, t, dh, threads);
  return BlockBuffers::Bytes(p.chunk, p.chunk * WindowChunks(p.before, p.after), dh, threads);
}

absl::Status LshAttentionHead(DnnlContext* ctx, Workspace* ws, const LshAttentionParams& p,
                              const float* qk, int64_t ld_qk, const float* v, int64_t ld_v,
                              const float* rotations, const uint8_t* mask, float* out,
                              int64_t ld_out, int32_t* keys_out, const CancelCheck& cancel) {
  const int64_t t_len = p.seq_len, dh = p.head_dim, c = p.chunk;
  const int threads = omp_get_max_threads();
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
    BlockBuffers b(ws, t_len, t_len, dh, threads);
    for (int64_t t = 0; t < t_len; ++t) {
      CopyRow(qk + t * ld_qk, b.q.data() + t * dh, dh);
      CopyRow(knorm.data() + t * dh, b.k.data() + t * dh, dh);
      CopyRow(v + t * ld_v, b.v.data() + t * dh, dh);
      b.qpos[t] = b.kpos[t] = static_cast<int32_t>(t);
      b.kvalid[t] = mask ? mask[t] : 1;
    }
    RETURN_IF_ERROR(AttendBlock(ctx, b, t_len, t_len, dh, p.causal, /*self_mask=*/true));
    for (int64_t t = 0; t < t_len; ++t) CopyRow(b.o.data() + t * dh, out + t * ld_out, dh);
    return absl::OkStatus();
  }

  REFORMER_CHECK(t_len % c == 0);
  const BucketSpec& spec = p.buckets;
  const int64_t nh = spec.num_hashes, n_slots = nh * t_len, half = spec.rotation_half();
  const int64_t nkeys = spec.num_keys_per_round();
  WsBuffer<int32_t> keys(ws, n_slots), perm(ws, n_slots), counts(ws, nh * nkeys + 1);
  {
    // Hash projections r = qk · R (SPEC §7.3), on the unnormalised qk.
    const int64_t hr = HashRows(t_len, c);
    WsBuffer<float> rt(ws, hr * nh * half);
    for (int64_t t0 = 0; t0 < t_len; t0 += hr) {
      const int64_t rows = std::min(hr, t_len - t0);
      MatmulCall mc;
      mc.m = rows;
      mc.k = dh;
      mc.n = nh * half;
      mc.src = qk + t0 * ld_qk;
      mc.lda = ld_qk;
      mc.b = rotations;
      mc.b_stride_k = nh * half;
      mc.b_stride_n = 1;
      mc.dst = rt.data();
      mc.ldc = nh * half;
      RETURN_IF_ERROR(ctx->Matmul(mc));
      ComputeBucketKeys(rt.data(), nh * half, t0, rows, t_len, spec, mask, keys.data());
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
  BlockBuffers b(ws, c, n_keys, dh, threads);
  const int32_t* pm = perm.data();
  for (int64_t j = 0; j < n_chunks; ++j) {
    if (cancel && (j % 16) == 0 && cancel()) return absl::CancelledError("forward cancelled");
    for (int64_t i = 0; i < c; ++i) {
      const int64_t pos = pm[j * c + i] % t_len;
      CopyRow(qk + pos * ld_qk, b.q.data() + i * dh, dh);
      b.qpos[i] = static_cast<int32_t>(pos);
    }
    int64_t r = 0;
    for (int64_t off = -p.before; off <= p.after; ++off) {
      const int64_t jj = ((j + off) % n_chunks + n_chunks) % n_chunks;
      for (int64_t i = 0; i < c; ++i, ++r) {
        const int64_t pos = pm[jj * c + i] % t_len;
        CopyRow(knorm.data() + pos * dh, b.k.data() + r * dh, dh);
        CopyRow(v + pos * ld_v, b.v.data() + r * dh, dh);
        b.kpos[r] = static_cast<int32_t>(pos);
        b.kvalid[r] = mask ? mask[pos] : 1;
      }
    }
    RETURN_IF_ERROR(AttendBlock(ctx, b, c, n_keys, dh, p.causal, /*self_mask=*/true));
    for (int64_t i = 0; i < c; ++i) {
      const int64_t k = pm[j * c + i];
      if (nh == 1) {
        CopyRow(b.o.data() + i * dh, out + k * ld_out, dh);
      } else {
        CopyRow(b.o.data() + i * dh, o_rounds.data() + k * dh, dh);
        lse_rounds[k] = b.lse[i];
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

absl::Status LocalAttentionHead(DnnlContext* ctx, Workspace* ws, const LocalAttentionParams& p,
                                const float* q, int64_t ld_q, const float* k, int64_t ld_k,
                                const float* v, int64_t ld_v, const uint8_t* mask, float* out,
                                int64_t ld_out, const CancelCheck& cancel) {
  const int64_t t_len = p.seq_len, dh = p.head_dim, c = p.chunk;
  const int threads = omp_get_max_threads();
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  auto load_key = [&](int64_t pos, float* kdst, float* vdst) {
    const float* ks = k + pos * ld_k;
    for (int64_t j = 0; j < dh; ++j) kdst[j] = ks[j] / sqrt_dh;
    CopyRow(v + pos * ld_v, vdst, dh);
  };
  if (t_len <= c) {
    BlockBuffers b(ws, t_len, t_len, dh, threads);
    for (int64_t t = 0; t < t_len; ++t) {
      CopyRow(q + t * ld_q, b.q.data() + t * dh, dh);
      load_key(t, b.k.data() + t * dh, b.v.data() + t * dh);
      b.qpos[t] = b.kpos[t] = static_cast<int32_t>(t);
      b.kvalid[t] = mask ? mask[t] : 1;
    }
    RETURN_IF_ERROR(AttendBlock(ctx, b, t_len, t_len, dh, p.causal, /*self_mask=*/false));
    for (int64_t t = 0; t < t_len; ++t) CopyRow(b.o.data() + t * dh, out + t * ld_out, dh);
    return absl::OkStatus();
  }
  REFORMER_CHECK(t_len % c == 0);
  const int64_t win = WindowChunks(p.before, p.after);
  const int64_t n_chunks = t_len / c, n_keys = win * c;
  BlockBuffers b(ws, c, n_keys, dh, threads);
  for (int64_t j = 0; j < n_chunks; ++j) {
    if (cancel && (j % 16) == 0 && cancel()) return absl::CancelledError("forward cancelled");
    for (int64_t i = 0; i < c; ++i) {
      CopyRow(q + (j * c + i) * ld_q, b.q.data() + i * dh, dh);
      b.qpos[i] = static_cast<int32_t>(j * c + i);
    }
    int64_t r = 0;
    for (int64_t off = -p.before; off <= p.after; ++off) {
      const int64_t jj = ((j + off) % n_chunks + n_chunks) % n_chunks;
      for (int64_t i = 0; i < c; ++i, ++r) {
        const int64_t pos = jj * c + i;
        load_key(pos, b.k.data() + r * dh, b.v.data() + r * dh);
        b.kpos[r] = static_cast<int32_t>(pos);
        b.kvalid[r] = mask ? mask[pos] : 1;
      }
    }
    RETURN_IF_ERROR(AttendBlock(ctx, b, c, n_keys, dh, p.causal, /*self_mask=*/false));
    for (int64_t i = 0; i < c; ++i) CopyRow(b.o.data() + i * dh, out + (j * c + i) * ld_out, dh);
  }
  return absl::OkStatus();
}

}  // namespace reformer
