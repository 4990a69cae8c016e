#include "engine/model/forward.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/base/check.h"
#include "engine/base/status_macros.h"
#include "engine/model/weights.h"
#include "engine/ops/attention.h"
#include "engine/ops/layer_norm.h"
#include "engine/ops/softmax.h"

namespace reformer {
namespace {

int64_t RoundUp(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

int64_t ProjWidth(AttnType t) { return t == AttnType::kLsh ? 2 : 3; }

}  // namespace

int64_t HeadsPerProjection(const ReformerConfig& c, AttnType type, int64_t rows) {
  const int64_t nh = c.num_attention_heads, per_head = ProjWidth(type) * c.attention_head_size;
  int64_t g = 1;
  for (int64_t d = 2; d <= nh; ++d) {
    const size_t bytes = sizeof(float) * static_cast<size_t>(rows) * d * per_head;
    if (nh % d == 0 && d * per_head <= kMaxProjectionWidth && bytes <= kMaxGroupedProjectionBytes) g = d;
  }
  return g;
}

namespace {

PostOp ToPostOp(Activation a, float* alpha) {
  *alpha = 0.f;
  switch (a) {
    case Activation::kRelu: return PostOp::kRelu;
    case Activation::kGelu: return PostOp::kGeluErf;
    case Activation::kGeluNew:
    case Activation::kGeluFast: return PostOp::kGeluTanh;
    case Activation::kSilu: *alpha = 1.f; return PostOp::kSwish;
    case Activation::kQuickGelu: *alpha = 1.702f; return PostOp::kSwish;
    case Activation::kTanh: return PostOp::kTanh;
    case Activation::kSigmoid: return PostOp::kLogistic;
    case Activation::kMish: return PostOp::kMish;
    case Activation::kLinear: return PostOp::kNone;
  }
  return PostOp::kNone;
}

LshAttentionParams LshParams(const ReformerConfig& c, int64_t t, bool padding_bucket) {
  LshAttentionParams p;
  p.seq_len = t;
  p.head_dim = c.attention_head_size;
  p.chunk = c.lsh_attn_chunk_length;
  p.before = c.lsh_num_chunks_before;
  p.after = c.lsh_num_chunks_after;
  p.causal = c.is_decoder;
  p.buckets.factors = c.num_buckets;
  p.buckets.num_hashes = c.num_hashes;
  p.buckets.padding_bucket = padding_bucket;
  return p;
}

LocalAttentionParams LocalParams(const ReformerConfig& c, int64_t t) {
  LocalAttentionParams p;
  p.seq_len = t;
  p.head_dim = c.attention_head_size;
  p.chunk = c.local_attn_chunk_length;
  p.before = c.local_num_chunks_before;
  p.after = c.local_num_chunks_after;
  p.causal = c.is_decoder;
  return p;
}

size_t OutputBytes(const ReformerConfig& c, int64_t t0, uint32_t outputs) {
  size_t n = 0;
  if (outputs & kOutputLogits) n += t0 * c.vocab_size;
  if (outputs & kOutputHiddenStates) n += t0 * 2 * c.hidden_size;
  if (outputs & kOutputTokenLogprobs) n += t0;
  if (outputs & kOutputEmbedding) n += 2 * c.hidden_size;
  return n * sizeof(float);
}

// Counts the caller-visible output vectors in the workspace while the forward runs.
class OutputAccounting {
 public:
  OutputAccounting(Workspace* ws, size_t bytes) : ws_(ws), bytes_(bytes) { ws_->Add(bytes_); }
  ~OutputAccounting() { ws_->Sub(bytes_); }

 private:
  Workspace* ws_;
  size_t bytes_;
};

}  // namespace

PackedLayer PackedModel::PackLayer(const ReformerConfig& c, const LayerWeights& L, AttnType type,
                                   ComputeType ct) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads, dh = c.attention_head_size;
  const int64_t F = c.feed_forward_size;
  PackedLayer pl;
  const bool lsh = type == AttnType::kLsh;
  const int64_t k = lsh ? 2 : 3;
  const float* parts[3] = {lsh ? L.query_key.data : L.query.data, lsh ? L.value.data : L.key.data,
                           lsh ? nullptr : L.value.data};
  // An LSH layer's shared query/key projection stays float32 in every compute type: the bucket
  // choice (SPEC §7.3) then sees float32 arithmetic from the layer's input on (issue 14; docs/isa.md).
  const ComputeType proj_ct = lsh ? ComputeType::kFloat32 : ct;
  for (int64_t h = 0; h < nh; ++h) {
    pl.head_proj.push_back(PackedWeight::Build(
        H, k * dh, [&](int64_t kk, int64_t j) { return parts[j / dh][(h * dh + j % dh) * H + kk]; }, proj_ct));
  }
  pl.attn_out = PackedWeight::FromLinear(L.attn_out.data, nh * dh, 0, 0, nh * dh, H, ct);
  pl.ff_in = PackedWeight::FromLinear(L.ff_in_weight.data, H, 0, 0, H, F, ct);
  pl.ff_out = PackedWeight::FromLinear(L.ff_out_weight.data, F, 0, 0, F, H, ct);
  return pl;
}

size_t PackedLayer::bytes() const {
  size_t b = attn_out.bytes() + ff_in.bytes() + ff_out.bytes();
  for (const PackedWeight& w : head_proj) b += w.bytes();
  return b;
}

void PackedModel::Add(PackedLayer layer) {
  bytes += layer.bytes();
  layers.push_back(std::move(layer));
}

void PackedModel::SetLmHead(const ReformerConfig& c, const float* lm_weight) {
  lm_head = PackedWeight::FromLinear(lm_weight, 2 * c.hidden_size, 0, 0, 2 * c.hidden_size, c.vocab_size);
  bytes += lm_head.bytes();
}

PackedModel PackedModel::Build(const ReformerConfig& c, const ModelWeights& w, ComputeType ct) {
  PackedModel pm;
  for (int64_t i = 0; i < c.num_layers(); ++i) pm.Add(PackLayer(c, w.layers[i], c.attn_layers[i], ct));
  pm.SetLmHead(c, w.lm_weight.data);
  return pm;
}

int64_t TileRowsForBudget(const ReformerConfig& c, size_t budget_bytes, int64_t requested) {
  const int64_t H = c.hidden_size;
  const size_t row_bytes =
      sizeof(float) * std::max({H, H + c.feed_forward_size, 2 * H + c.vocab_size});
  const int64_t cap = requested > 0 ? std::min<int64_t>(requested, 4096) : 1024;
  int64_t tile = 0;
  for (int64_t t = 256; t <= cap; t *= 2)
    if (t * row_bytes <= budget_bytes / 2) tile = t;
  return tile;
}

size_t PlanPeakBytes(const ReformerConfig& c, const std::vector<int64_t>& padded_lengths,
                     const std::vector<int64_t>& output_lengths, uint32_t outputs, int64_t tile_rows,
                     int num_threads, ComputeType ct) {
  const int64_t H = c.hidden_size, dh = c.attention_head_size, V = c.vocab_size;
  int64_t total = 0;
  for (int64_t t : padded_lengths) total += t;
  const int64_t tile = tile_rows;
  const int64_t rows = RoundUp(std::max<int64_t>(total, 1), tile);
  size_t fixed = sizeof(float) * 2 * rows * H;  // A, Z
  fixed += static_cast<size_t>(total) * (sizeof(int32_t) + 1);  // padded ids and masks
  for (int64_t t0 : output_lengths) fixed += OutputBytes(c, t0, outputs);
  size_t phase = 0;
  for (AttnType type : {AttnType::kLocal, AttnType::kLsh}) {
    bool present = false;
    for (AttnType t : c.attn_layers) present |= (t == type);
    if (!present) continue;
    size_t inner = sizeof(float) * tile * H;
    for (int64_t t : padded_lengths) {
      const size_t a = type == AttnType::kLsh ? LshAttentionWorkBytes(LshParams(c, t, true), num_threads)
                                             : LocalAttentionWorkBytes(LocalParams(c, t), num_threads);
      inner = std::max(inner, a);
    }
    const int64_t proj_width = HeadsPerProjection(c, type, rows) * ProjWidth(type) * dh;
    phase = std::max(phase, sizeof(float) * rows * (proj_width + c.num_attention_heads * dh) + inner);
  }
  phase = std::max(phase, sizeof(float) * tile * (H + c.feed_forward_size));
  const bool need_lm = outputs & (kOutputLogits | kOutputTokenLogprobs);
  phase = std::max(phase, sizeof(float) * (tile * 2 * H + (need_lm ? tile * V + num_threads * V : 0)));
  // A bfloat16 / int8 matmul's activation buffers (engine/dnnl/matmul.h), beside a phase's buffers.
  const int64_t widest_k = std::max({H, c.num_attention_heads * dh, c.feed_forward_size});
  const int64_t widest_n = std::max({H, c.feed_forward_size, 3 * dh * c.num_attention_heads});
  return fixed + phase + MatmulScratchBytes(ct, tile, widest_k, widest_n);
}

absl::Status RunForward(const ReformerModel& model, DnnlContext* ctx, Workspace* ws, int64_t tile_rows,
                        const std::vector<ForwardDoc>& docs, const ForwardOptions& opt,
                        ForwardOutputs* out) {
  const ReformerConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const PackedModel& pk = model.packed();
  const int64_t H = c.hidden_size, nh = c.num_attention_heads, dh = c.attention_head_size;
  const int64_t F = c.feed_forward_size, V = c.vocab_size;
  const int64_t n_docs = static_cast<int64_t>(docs.size());
  const CancelCheck cancel = (opt.cancel && *opt.cancel) ? CancelCheck(*opt.cancel) : CancelCheck();
  const int threads = omp_get_max_threads();

  std::vector<int64_t> offset(n_docs + 1, 0);
  for (int64_t d = 0; d < n_docs; ++d) offset[d + 1] = offset[d] + docs[d].padded_length;
  const int64_t total = offset[n_docs];
  // Every dense matmul runs on exactly `tile` rows: the streams are padded to whole tiles.
  const int64_t tile = tile_rows;
  const int64_t rows = RoundUp(std::max<int64_t>(total, 1), tile);

  // Outputs (counted while the forward runs: they are part of the estimate).
  size_t out_bytes = 0;
  out->docs.assign(n_docs, DocumentOutput());
  for (int64_t d = 0; d < n_docs; ++d) {
    DocumentOutput& o = out->docs[d];
    const int64_t t0 = docs[d].output_length;
    o.num_tokens = t0;
    if (opt.outputs & kOutputLogits) o.logits.assign(t0 * V, 0.f);
    if (opt.outputs & kOutputHiddenStates) o.hidden_states.assign(t0 * 2 * H, 0.f);
    if (opt.outputs & kOutputTokenLogprobs) o.token_logprobs.assign(t0, 0.f);
    if (opt.outputs & kOutputEmbedding) o.embedding.assign(2 * H, 0.f);
    out_bytes += OutputBytes(c, t0, opt.outputs);
  }
  OutputAccounting accounting(ws, out_bytes);
  // Working blocks are recycled up to this forward's planned peak (plus rounding slack); what the
  // workspace already caches beyond that is returned to the OS now (workspace.h).
  std::vector<int64_t> padded_lengths, output_lengths;
  for (const ForwardDoc& doc : docs) {
    padded_lengths.push_back(doc.padded_length);
    output_lengths.push_back(doc.output_length);
  }
  const size_t plan = PlanPeakBytes(c, padded_lengths, output_lengths, opt.outputs, tile, threads,
                                    model.compute_type());
  ws->set_cache_limit(plan + plan / 8 + (size_t{16} << 20));
  out->buckets.clear();
  out->bucket_layers.clear();

  // Embeddings (SPEC §4): both streams start as x.
  WsBuffer<float> A(ws, rows * H, kUninitialized), Z(ws, rows * H, kUninitialized);
  std::fill(A.data() + total * H, A.data() + rows * H, 0.f);  // tile padding rows
  for (int64_t d = 0; d < n_docs; ++d) {
    const ForwardDoc& doc = docs[d];
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < doc.padded_length; ++t) {
      float* x = A.data() + (offset[d] + t) * H;
      const float* we = w.word_embeddings.data + static_cast<int64_t>(doc.ids[t]) * H;
      if (c.axial_pos_embds) {
        const int64_t a1 = c.axial_pos_shape[1], d0 = c.axial_pos_embds_dim[0],
                      d1 = c.axial_pos_embds_dim[1];
        const float* p0 = w.axial_pos0.data + (t / a1) * d0;
        const float* p1 = w.axial_pos1.data + (t % a1) * d1;
        for (int64_t j = 0; j < d0; ++j) x[j] = we[j] + p0[j];
        for (int64_t j = 0; j < d1; ++j) x[d0 + j] = we[d0 + j] + p1[j];
      } else {
        const float* pe = w.position_embeddings.data + t * H;
        for (int64_t j = 0; j < H; ++j) x[j] = we[j] + pe[j];
      }
    }
  }
  std::memcpy(Z.data(), A.data(), sizeof(float) * rows * H);

  float act_alpha = 0.f;
  const PostOp act = ToPostOp(c.hidden_act, &act_alpha);

  for (int64_t li = 0; li < c.num_layers(); ++li) {
    if (cancel && cancel()) return absl::CancelledError("forward cancelled");
    const LayerWeights& L = w.layers[li];
    const PackedLayer& P = pk.layers[li];
    const AttnType type = c.attn_layers[li];
    const int64_t k = ProjWidth(type), g = HeadsPerProjection(c, type, rows), ldp = k * dh;
    int bucket_slot = -1;
    if (opt.want_buckets && type == AttnType::kLsh) {
      bool hashes = false;
      for (const ForwardDoc& doc : docs) hashes |= doc.padded_length > c.lsh_attn_chunk_length;
      if (hashes) {
        bucket_slot = static_cast<int>(out->buckets.size());
        out->bucket_layers.push_back(static_cast<int>(li));
        out->buckets.emplace_back(n_docs);
        for (int64_t d = 0; d < n_docs; ++d)
          out->buckets.back()[d].assign(nh * c.num_hashes * docs[d].padded_length, 0);
      }
    }
    {
      // The projections of one group of g heads at a time: one LayerNorm per tile, one matmul per
      // head into that head's own [rows, ldp] block (contiguous rows: the attention streams them);
      // the merged attention output of all heads [rows, nh*dh].
      const int64_t ldo = nh * dh;
      WsBuffer<float> proj(ws, g * rows * ldp, kUninitialized), oh(ws, rows * ldo, kUninitialized);
      std::fill(oh.data() + total * ldo, oh.data() + rows * ldo, 0.f);  // tile padding rows
      for (int64_t h0 = 0; h0 < nh; h0 += g) {
        {
          WsBuffer<float> y(ws, tile * H, kUninitialized);
          for (int64_t t0 = 0; t0 < rows; t0 += tile) {
            const int64_t m = tile;
            LayerNormRows(Z.data() + t0 * H, H, m, H, L.attn_ln_weight.data, L.attn_ln_bias.data,
                          c.layer_norm_eps, y.data(), H);
            for (int64_t h = h0; h < h0 + g; ++h) {
              MatmulCall mc;
              mc.With(P.head_proj[h]);
              mc.m = m;
              mc.src = y.data();
              mc.lda = H;
              mc.dst = proj.data() + ((h - h0) * rows + t0) * ldp;
              mc.ldc = ldp;
              RETURN_IF_ERROR(ctx->Matmul(mc));
            }
          }
        }
        for (int64_t h = h0; h < h0 + g; ++h) {
          for (int64_t d = 0; d < n_docs; ++d) {
            const ForwardDoc& doc = docs[d];
            const float* base = proj.data() + ((h - h0) * rows + offset[d]) * ldp;
            float* o = oh.data() + offset[d] * ldo + h * dh;
            if (type == AttnType::kLsh) {
              const LshAttentionParams p = LshParams(c, doc.padded_length, doc.padding_bucket);
              if (doc.padded_length > p.chunk && L.rotations.data == nullptr)
                return absl::FailedPreconditionError(
                    absl::StrCat("layer ", li, " has no LSH rotations but a document of ",
                                  doc.padded_length, " tokens needs hashing"));
              const int64_t rot_block = dh * c.num_hashes * p.buckets.rotation_half();
              const float* rot = L.rotations.data ? L.rotations.data + h * rot_block : nullptr;
              int32_t* keys = nullptr;
              if (bucket_slot >= 0 && doc.padded_length > p.chunk)
                keys = out->buckets[bucket_slot][d].data() + h * c.num_hashes * doc.padded_length;
              RETURN_IF_ERROR(LshAttentionHead(ctx, ws, p, base, ldp, base + dh, ldp, rot, doc.mask, o,
                                               ldo, keys, cancel));
            } else {
              RETURN_IF_ERROR(LocalAttentionHead(ctx, ws, LocalParams(c, doc.padded_length), base, ldp,
                                                 base + dh, ldp, base + 2 * dh, ldp, doc.mask, o, ldo,
                                                 cancel));
            }
          }
        }
      }
      // A += merged heads · attention.output.denseᵀ (SPEC §5 step 1).
      for (int64_t t0 = 0; t0 < rows; t0 += tile) {
        MatmulCall mc;
        mc.With(P.attn_out);
        mc.m = tile;
        mc.src = oh.data() + t0 * ldo;
        mc.lda = ldo;
        mc.dst = A.data() + t0 * H;
        mc.ldc = H;
        mc.accumulate = true;
        RETURN_IF_ERROR(ctx->Matmul(mc));
      }
    }
    {
      // Feed-forward in token tiles: Z += act(LN(A) W1 + b1) W2 + b2.
      WsBuffer<float> x(ws, tile * H, kUninitialized), f(ws, tile * F, kUninitialized);
      for (int64_t t0 = 0; t0 < rows; t0 += tile) {
        const int64_t m = tile;
        LayerNormRows(A.data() + t0 * H, H, m, H, L.ff_ln_weight.data, L.ff_ln_bias.data,
                      c.layer_norm_eps, x.data(), H);
        MatmulCall m1;
        m1.With(P.ff_in);
        m1.m = m;
        m1.src = x.data();
        m1.lda = H;
        m1.bias = L.ff_in_bias.data;
        m1.dst = f.data();
        m1.ldc = F;
        m1.post_op = act;
        m1.post_alpha = act_alpha;
        RETURN_IF_ERROR(ctx->Matmul(m1));
        MatmulCall m2;
        m2.With(P.ff_out);
        m2.m = m;
        m2.src = f.data();
        m2.lda = F;
        m2.bias = L.ff_out_bias.data;
        m2.dst = Z.data() + t0 * H;
        m2.ldc = H;
        m2.accumulate = true;
        RETURN_IF_ERROR(ctx->Matmul(m2));
      }
    }
  }
  if (cancel && cancel()) return absl::CancelledError("forward cancelled");

  // Final LayerNorm over concat(A, Z), then the requested outputs, tile by tile.
  const bool need_lm = opt.outputs & (kOutputLogits | kOutputTokenLogprobs);
  WsBuffer<float> hb(ws, tile * 2 * H, kUninitialized), lb, scratch;
  if (need_lm) {
    lb.Reset(ws, tile * V, kUninitialized);
    scratch.Reset(ws, static_cast<size_t>(threads) * V, kUninitialized);
  }
  std::vector<std::vector<double>> emb_sum;
  if (opt.outputs & kOutputEmbedding) emb_sum.assign(n_docs, std::vector<double>(2 * H, 0.0));
  int64_t d = 0;
  for (int64_t t0 = 0; t0 < rows && d < n_docs; t0 += tile) {
    const int64_t m = tile;
    LayerNormConcatRows(A.data() + t0 * H, Z.data() + t0 * H, H, m, H, w.final_ln_weight.data,
                        w.final_ln_bias.data, c.layer_norm_eps, hb.data(), 2 * H);
    if (need_lm) {
      MatmulCall mc;
      mc.With(pk.lm_head);
      mc.m = m;
      mc.src = hb.data();
      mc.lda = 2 * H;
      mc.bias = w.lm_bias.data;
      mc.dst = lb.data();
      mc.ldc = V;
      RETURN_IF_ERROR(ctx->Matmul(mc));
    }
    for (int64_t r = 0; r < m; ++r) {
      const int64_t g = t0 + r;
      while (d < n_docs && g >= offset[d + 1]) ++d;
      if (d == n_docs) break;
      const int64_t p = g - offset[d];
      if (p >= docs[d].output_length) continue;
      DocumentOutput& o = out->docs[d];
      const float* hrow = hb.data() + r * 2 * H;
      if (opt.outputs & kOutputHiddenStates)
        std::memcpy(o.hidden_states.data() + p * 2 * H, hrow, sizeof(float) * 2 * H);
      if (opt.outputs & kOutputEmbedding)
        for (int64_t j = 0; j < 2 * H; ++j) emb_sum[d][j] += hrow[j];
      if (!need_lm) continue;
      const float* lrow = lb.data() + r * V;
      if (opt.outputs & kOutputLogits) std::memcpy(o.logits.data() + p * V, lrow, sizeof(float) * V);
      if ((opt.outputs & kOutputTokenLogprobs) && p + 1 < docs[d].output_length) {
        const float lse = LogSumExp(lrow, V, scratch.data());
        o.token_logprobs[p + 1] = lrow[docs[d].ids[p + 1]] - lse;
      }
    }
  }
  if (opt.outputs & kOutputEmbedding) {
    for (int64_t i = 0; i < n_docs; ++i) {
      const double n = static_cast<double>(std::max<int64_t>(docs[i].output_length, 1));
      for (int64_t j = 0; j < 2 * H; ++j)
        out->docs[i].embedding[j] = static_cast<float>(emb_sum[i][j] / n);
    }
  }
  return absl::OkStatus();
}

}  // namespace reformer
