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
  // choice (engine-numerics §7.3) then sees float32 arithmetic from the layer's input on
  // (docs/isa.md §3).
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
  const int64_t cap = requested > 0 ? std::min(requested, kMaxTileRows) : kMaxTileRows;
  int64_t tile = 0;
  for (int64_t t = kMinTileRows; t <= cap; t *= 2)
    if (t * row_bytes <= budget_bytes / 2) tile = t;
  return tile;
}

int64_t DocumentTileRows(int64_t padded_length, int64_t max_tile) {
  const int64_t t = padded_length;
  if (t <= kSmallDocumentRows) {  // one tile of the next power of two >= T
    int64_t m = kMinTileRows;
    while (m < t && m < max_tile) m *= 2;
    return m;
  }
  const int64_t floor_m = std::min(kFloorTileRows, max_tile);
  for (int64_t m = max_tile; m > floor_m; m /= 2)
    if (RoundUp(t, m) - t <= t / 8) return m;
  return floor_m;
}

RowLayout PlanRows(const std::vector<int64_t>& padded_lengths, int64_t max_tile) {
  RowLayout l;
  l.offset.assign(padded_lengths.size(), 0);
  std::vector<int64_t> tiles;
  for (int64_t t : padded_lengths) tiles.push_back(DocumentTileRows(t, max_tile));
  for (int64_t tile = max_tile; tile >= kMinTileRows; tile /= 2) {  // regions by descending tile
    RowLayout::Region r;
    r.begin = l.rows;
    r.tile = tile;
    for (size_t d = 0; d < padded_lengths.size(); ++d) {
      if (tiles[d] != tile) continue;
      l.offset[d] = r.begin + r.tokens;
      r.docs.push_back(static_cast<int64_t>(d));
      r.tokens += padded_lengths[d];
    }
    if (r.docs.empty()) continue;
    r.rows = RoundUp(r.tokens, tile);
    l.rows += r.rows;
    l.tokens += r.tokens;
    l.max_tile = std::max(l.max_tile, tile);
    l.regions.push_back(std::move(r));
  }
  return l;
}

size_t PlanPeakBytes(const ReformerConfig& c, const std::vector<int64_t>& padded_lengths,
                     const std::vector<bool>& padding_buckets, uint32_t outputs, int64_t tile_rows,
                     int num_threads, ComputeType ct) {
  const int64_t H = c.hidden_size, dh = c.attention_head_size, V = c.vocab_size;
  const RowLayout layout = PlanRows(padded_lengths, tile_rows);
  const int64_t tile = layout.max_tile, rows = layout.rows;  // buffers of the largest tile in use
  size_t fixed = sizeof(float) * 2 * rows * H;                         // A, Z
  fixed += static_cast<size_t>(layout.tokens) * (sizeof(int32_t) + 1);  // padded ids and masks
  size_t phase = 0;
  for (AttnType type : {AttnType::kLocal, AttnType::kLsh}) {
    bool present = false;
    for (AttnType t : c.attn_layers) present |= (t == type);
    if (!present) continue;
    size_t inner = sizeof(float) * tile * H;
    for (size_t d = 0; d < padded_lengths.size(); ++d) {
      const int64_t t = padded_lengths[d];
      const size_t a = type == AttnType::kLsh
                           ? LshAttentionWorkBytes(LshParams(c, t, padding_buckets[d]), num_threads)
                           : LocalAttentionWorkBytes(LocalParams(c, t), num_threads);
      inner = std::max(inner, a);
    }
    const int64_t proj_width = HeadsPerProjection(c, type, rows) * ProjWidth(type) * dh;
    phase = std::max(phase, sizeof(float) * rows * (proj_width + c.num_attention_heads * dh) + inner);
  }
  phase = std::max(phase, sizeof(float) * tile * (H + c.feed_forward_size));
  const bool need_lm = outputs & (kOutputLogits | kOutputTokenLogprobs);
  size_t out_phase = sizeof(float) * (tile * 2 * H + (need_lm ? tile * V + num_threads * V : 0));
  if (outputs & kOutputEmbedding) out_phase += sizeof(double) * padded_lengths.size() * 2 * H;
  // A bfloat16 / int8 matmul's activation buffers (engine/dnnl/matmul.h), beside a phase's buffers.
  const int64_t widest_k = std::max({H, c.num_attention_heads * dh, c.feed_forward_size});
  const int64_t widest_n = std::max({H, c.feed_forward_size, 3 * dh * c.num_attention_heads});
  return fixed + std::max(phase, out_phase) + MatmulScratchBytes(ct, tile, widest_k, widest_n);
}

namespace {

// One document's output rows inside a token tile: tile rows [row, row + count) are the document's
// positions [pos, pos + count).
struct Segment {
  int64_t doc, row, pos, count;
};

// One forward over a ragged batch (see forward.h); the caller's session owns `ctx` and `ws`.
class ForwardPass {
 public:
  ForwardPass(const ReformerModel& model, DnnlContext* ctx, Workspace* ws, const std::vector<ForwardDoc>& docs,
              const ForwardOptions& opt, RowLayout layout, ForwardOutputs* out)
      : c_(model.config()), w_(model.weights()), pk_(model.packed()), ctx_(ctx), ws_(ws), docs_(docs),
        opt_(opt), layout_(std::move(layout)), out_(out), threads_(omp_get_max_threads()),
        cancel_((opt.cancel && *opt.cancel) ? CancelCheck(*opt.cancel) : CancelCheck()) {}

  absl::Status Run();

 private:
  bool Cancelled() const { return cancel_ && cancel_(); }
  absl::Status Matmul(const MatmulCall& mc) {
    out_->stats.matmul_flops += 2.0 * static_cast<double>(mc.m) * static_cast<double>(mc.k) * mc.n;
    return ctx_->Matmul(mc);
  }
  // ForwardOptions::between_parts, if any, for the current layer.
  absl::Status BetweenParts() const { return opt_.between_parts ? opt_.between_parts(layer_) : absl::OkStatus(); }
  // Calls f(first_row, rows) for every matmul tile of every region, in row order (BetweenParts
  // between two tiles).
  template <class F>
  absl::Status ForEachTile(F f) {
    bool first = true;
    for (const RowLayout::Region& r : layout_.regions)
      for (int64_t t0 = r.begin; t0 < r.begin + r.rows; t0 += r.tile) {
        if (!first) RETURN_IF_ERROR(BetweenParts());
        first = false;
        RETURN_IF_ERROR(f(t0, r.tile));
      }
    return absl::OkStatus();
  }
  // Zeroes the tile padding rows of a [rows, width] buffer (row stride ld).
  void ZeroPaddingRows(float* x, int64_t width, int64_t ld) const {
    for (const RowLayout::Region& r : layout_.regions)
      for (int64_t t = r.begin + r.tokens; t < r.begin + r.rows; ++t) std::fill(x + t * ld, x + t * ld + width, 0.f);
  }
  void Embed(float* a, float* z) const;
  int BucketSlot(int64_t li);
  absl::Status Attention(int64_t li, const float* z, float* a, int bucket_slot);
  absl::Status AttendHeads(int64_t li, int64_t h0, int64_t g, const float* proj, float* oh, int bucket_slot);
  absl::Status FeedForward(int64_t li, const float* a, float* z);
  absl::Status Outputs(const float* a, const float* z);
  absl::Status OutputTile(const float* a, const float* z, int64_t t0, int64_t m, const std::vector<Segment>& segs,
                          float* hb, float* lb, float* scratch, double* emb_sum);

  const ReformerConfig& c_;
  const ModelWeights& w_;
  const PackedModel& pk_;
  DnnlContext* ctx_;
  Workspace* ws_;
  const std::vector<ForwardDoc>& docs_;
  const ForwardOptions& opt_;
  const RowLayout layout_;
  ForwardOutputs* out_;
  const int threads_;
  const CancelCheck cancel_;
  int64_t layer_ = 0;  // the layer being computed (for between_parts)
};

absl::Status ForwardPass::Run() {
  const int64_t H = c_.hidden_size, rows = layout_.rows;
  out_->buckets.clear();
  out_->bucket_layers.clear();
  out_->stats = RunStats();
  out_->stats.tokens = layout_.tokens;
  out_->stats.computed_rows = rows;
  // Embeddings (engine-numerics §5.1): both streams start as x.
  WsBuffer<float> A(ws_, rows * H, kUninitialized), Z(ws_, rows * H, kUninitialized);
  ZeroPaddingRows(A.data(), H, H);
  ZeroPaddingRows(Z.data(), H, H);
  Embed(A.data(), Z.data());
  for (int64_t li = 0; li < c_.num_layers(); ++li) {
    if (Cancelled()) return absl::CancelledError("forward cancelled");
    if (opt_.at_layer) RETURN_IF_ERROR(opt_.at_layer(li, A.data(), Z.data(), layout_.offset));
    layer_ = li;
    RETURN_IF_ERROR(Attention(li, Z.data(), A.data(), BucketSlot(li)));
    RETURN_IF_ERROR(BetweenParts());
    RETURN_IF_ERROR(FeedForward(li, A.data(), Z.data()));
  }
  if (Cancelled()) return absl::CancelledError("forward cancelled");
  if (opt_.at_layer) RETURN_IF_ERROR(opt_.at_layer(c_.num_layers(), A.data(), Z.data(), layout_.offset));
  return Outputs(A.data(), Z.data());
}

// x into both streams, a and z, by the same threads: z's first touch is not a serial copy of a
// (fresh pages are the dear part of a cold forward, docs/results/forward.md).
void ForwardPass::Embed(float* a, float* z) const {
  const int64_t H = c_.hidden_size;
  for (size_t d = 0; d < docs_.size(); ++d) {
    const ForwardDoc& doc = docs_[d];
    const int64_t off = layout_.offset[d];
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < doc.padded_length; ++t) {
      float* x = a + (off + t) * H;
      const float* we = w_.word_embeddings.data + static_cast<int64_t>(doc.ids[t]) * H;
      if (c_.axial_pos_embds) {
        const int64_t a1 = c_.axial_pos_shape[1], d0 = c_.axial_pos_embds_dim[0], d1 = c_.axial_pos_embds_dim[1];
        const float* p0 = w_.axial_pos0.data + (t / a1) * d0;
        const float* p1 = w_.axial_pos1.data + (t % a1) * d1;
        for (int64_t j = 0; j < d0; ++j) x[j] = we[j] + p0[j];
        for (int64_t j = 0; j < d1; ++j) x[d0 + j] = we[d0 + j] + p1[j];
      } else {
        const float* pe = w_.position_embeddings.data + t * H;
        for (int64_t j = 0; j < H; ++j) x[j] = we[j] + pe[j];
      }
      std::memcpy(z + (off + t) * H, x, sizeof(float) * H);
    }
  }
}

// The bucket slot of LSH layer `li` when buckets are wanted and some document hashes, else -1.
int ForwardPass::BucketSlot(int64_t li) {
  if (!opt_.want_buckets || c_.attn_layers[li] != AttnType::kLsh) return -1;
  bool hashes = false;
  for (const ForwardDoc& doc : docs_) hashes |= doc.padded_length > c_.lsh_attn_chunk_length;
  if (!hashes) return -1;
  const int slot = static_cast<int>(out_->buckets.size());
  out_->bucket_layers.push_back(static_cast<int>(li));
  out_->buckets.emplace_back(docs_.size());
  for (size_t d = 0; d < docs_.size(); ++d)
    out_->buckets.back()[d].assign(c_.num_attention_heads * c_.num_hashes * docs_[d].padded_length, 0);
  return slot;
}

// A += attention(LN(Z)) · attention.output.denseᵀ (engine-numerics §5.2). The projections of one
// group of g heads at a time: one LayerNorm per tile, one matmul per head into that head's own
// [rows, ldp] block (contiguous rows: the attention streams them); the merged output of all heads
// [rows, nh*dh].
absl::Status ForwardPass::Attention(int64_t li, const float* z, float* a, int bucket_slot) {
  const int64_t H = c_.hidden_size, nh = c_.num_attention_heads, dh = c_.attention_head_size;
  const int64_t rows = layout_.rows, ldo = nh * dh;
  const LayerWeights& L = w_.layers[li];
  const PackedLayer& P = pk_.layers[li];
  const AttnType type = c_.attn_layers[li];
  const int64_t g = HeadsPerProjection(c_, type, rows), ldp = ProjWidth(type) * dh;
  WsBuffer<float> proj(ws_, g * rows * ldp, kUninitialized), oh(ws_, rows * ldo, kUninitialized);
  ZeroPaddingRows(oh.data(), ldo, ldo);
  for (int64_t h0 = 0; h0 < nh; h0 += g) {
    {
      WsBuffer<float> y(ws_, layout_.max_tile * H, kUninitialized);
      RETURN_IF_ERROR(ForEachTile([&](int64_t t0, int64_t m) -> absl::Status {
        LayerNormRows(z + t0 * H, H, m, H, L.attn_ln_weight.data, L.attn_ln_bias.data, c_.layer_norm_eps,
                      y.data(), H);
        for (int64_t h = h0; h < h0 + g; ++h) {
          MatmulCall mc;
          mc.With(P.head_proj[h]);
          mc.m = m;
          mc.src = y.data();
          mc.lda = H;
          mc.dst = proj.data() + ((h - h0) * rows + t0) * ldp;
          mc.ldc = ldp;
          RETURN_IF_ERROR(Matmul(mc));
        }
        return absl::OkStatus();
      }));
    }
    RETURN_IF_ERROR(BetweenParts());
    RETURN_IF_ERROR(AttendHeads(li, h0, g, proj.data(), oh.data(), bucket_slot));
  }
  RETURN_IF_ERROR(BetweenParts());
  return ForEachTile([&](int64_t t0, int64_t m) {
    MatmulCall mc;
    mc.With(P.attn_out);
    mc.m = m;
    mc.src = oh.data() + t0 * ldo;
    mc.lda = ldo;
    mc.dst = a + t0 * H;
    mc.ldc = H;
    mc.accumulate = true;
    return Matmul(mc);
  });
}

// Attention of heads [h0, h0 + g) of every document, from their projection blocks into `oh`.
absl::Status ForwardPass::AttendHeads(int64_t li, int64_t h0, int64_t g, const float* proj, float* oh,
                                      int bucket_slot) {
  const int64_t nh = c_.num_attention_heads, dh = c_.attention_head_size, ldo = nh * dh;
  const int64_t rows = layout_.rows, ldp = ProjWidth(c_.attn_layers[li]) * dh;
  const LayerWeights& L = w_.layers[li];
  for (int64_t h = h0; h < h0 + g; ++h) {
    for (size_t d = 0; d < docs_.size(); ++d) {
      if (h > h0 || d > 0) RETURN_IF_ERROR(BetweenParts());
      const ForwardDoc& doc = docs_[d];
      const float* base = proj + ((h - h0) * rows + layout_.offset[d]) * ldp;
      float* o = oh + layout_.offset[d] * ldo + h * dh;
      if (c_.attn_layers[li] == AttnType::kLocal) {
        RETURN_IF_ERROR(LocalAttentionHead(ctx_, ws_, LocalParams(c_, doc.padded_length), base, ldp, base + dh,
                                           ldp, base + 2 * dh, ldp, doc.mask, o, ldo, cancel_));
        if (opt_.on_head) opt_.on_head(li, h, static_cast<int64_t>(d), base, ldp);
        continue;
      }
      const LshAttentionParams p = LshParams(c_, doc.padded_length, doc.padding_bucket);
      if (doc.padded_length > p.chunk && L.rotations.data == nullptr)
        return absl::FailedPreconditionError(absl::StrCat("layer ", li, " has no LSH rotations but a document of ",
                                                          doc.padded_length, " tokens needs hashing"));
      const int64_t rot_block = dh * c_.num_hashes * p.buckets.rotation_half();
      const float* rot = L.rotations.data ? L.rotations.data + h * rot_block : nullptr;
      int32_t* keys = nullptr;
      if (bucket_slot >= 0 && doc.padded_length > p.chunk)
        keys = out_->buckets[bucket_slot][d].data() + h * c_.num_hashes * doc.padded_length;
      RETURN_IF_ERROR(LshAttentionHead(ctx_, ws_, p, base, ldp, base + dh, ldp, rot, doc.mask, o, ldo, keys,
                                       cancel_));
      if (opt_.on_head) opt_.on_head(li, h, static_cast<int64_t>(d), base, ldp);
    }
  }
  return absl::OkStatus();
}

// Z += act(LN(A) W1 + b1) W2 + b2, tile by tile.
absl::Status ForwardPass::FeedForward(int64_t li, const float* a, float* z) {
  const int64_t H = c_.hidden_size, F = c_.feed_forward_size;
  const LayerWeights& L = w_.layers[li];
  const PackedLayer& P = pk_.layers[li];
  float act_alpha = 0.f;
  const PostOp act = ActivationPostOp(c_.hidden_act, &act_alpha);
  WsBuffer<float> x(ws_, layout_.max_tile * H, kUninitialized), f(ws_, layout_.max_tile * F, kUninitialized);
  return ForEachTile([&](int64_t t0, int64_t m) -> absl::Status {
    LayerNormRows(a + t0 * H, H, m, H, L.ff_ln_weight.data, L.ff_ln_bias.data, c_.layer_norm_eps, x.data(), H);
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
    RETURN_IF_ERROR(Matmul(m1));
    MatmulCall m2;
    m2.With(P.ff_out);
    m2.m = m;
    m2.src = f.data();
    m2.lda = F;
    m2.bias = L.ff_out_bias.data;
    m2.dst = z + t0 * H;
    m2.ldc = H;
    m2.accumulate = true;
    return Matmul(m2);
  });
}

// Final LayerNorm over concat(A, Z), then the requested outputs, tile by tile, into the views.
absl::Status ForwardPass::Outputs(const float* a, const float* z) {
  const int64_t H2 = 2 * c_.hidden_size, V = c_.vocab_size, tile = layout_.max_tile;
  const bool need_lm = opt_.outputs & (kOutputLogits | kOutputTokenLogprobs);
  WsBuffer<float> hb(ws_, tile * H2, kUninitialized), lb, scratch;
  if (need_lm) {
    lb.Reset(ws_, tile * V, kUninitialized);
    scratch.Reset(ws_, static_cast<size_t>(threads_) * V, kUninitialized);
  }
  WsBuffer<double> emb_sum;
  if (opt_.outputs & kOutputEmbedding) emb_sum.Reset(ws_, docs_.size() * H2);  // zeroed
  std::vector<Segment> segs;
  for (const RowLayout::Region& r : layout_.regions) {
    size_t k = 0;  // first document of the region that may overlap the tile
    for (int64_t t0 = r.begin; t0 < r.begin + r.tokens; t0 += r.tile) {
      segs.clear();
      while (k < r.docs.size() && layout_.offset[r.docs[k]] + docs_[r.docs[k]].padded_length <= t0) ++k;
      for (size_t j = k; j < r.docs.size() && layout_.offset[r.docs[j]] < t0 + r.tile; ++j) {
        const int64_t d = r.docs[j], off = layout_.offset[d];
        const int64_t first = std::max(t0, off), end = std::min(t0 + r.tile, off + docs_[d].output_length);
        if (end > first) segs.push_back({d, first - t0, first - off, end - first});
      }
      if (segs.empty()) continue;  // only internal padding rows: nothing to output
      RETURN_IF_ERROR(OutputTile(a, z, t0, r.tile, segs, hb.data(), lb.data(), scratch.data(), emb_sum.data()));
    }
  }
  if (opt_.outputs & kOutputEmbedding) {
    for (size_t d = 0; d < docs_.size(); ++d) {
      const double n = static_cast<double>(std::max<int64_t>(docs_[d].output_length, 1));
      for (int64_t j = 0; j < H2; ++j) docs_[d].dst.embedding[j] = static_cast<float>(emb_sum[d * H2 + j] / n);
    }
  }
  return absl::OkStatus();
}

// One tile of the outputs. When the whole tile is output rows of one document, the LayerNorm and
// the LM head write straight into that document's views; otherwise into the tile buffers, from
// which each document's rows are copied. (Same calls either way: the bits do not depend on it.)
absl::Status ForwardPass::OutputTile(const float* a, const float* z, int64_t t0, int64_t m,
                                     const std::vector<Segment>& segs, float* hb, float* lb, float* scratch,
                                     double* emb_sum) {
  const int64_t H = c_.hidden_size, H2 = 2 * H, V = c_.vocab_size;
  const uint32_t outs = opt_.outputs;
  const bool need_lm = outs & (kOutputLogits | kOutputTokenLogprobs);
  const bool direct = segs.size() == 1 && segs[0].count == m;
  const OutputView* dv = direct ? &docs_[segs[0].doc].dst : nullptr;
  float* h = (direct && (outs & kOutputHiddenStates)) ? dv->hidden_states + segs[0].pos * H2 : hb;
  float* l = (direct && (outs & kOutputLogits)) ? dv->logits + segs[0].pos * V : lb;
  LayerNormConcatRows(a + t0 * H, z + t0 * H, H, m, H, w_.final_ln_weight.data, w_.final_ln_bias.data,
                      c_.layer_norm_eps, h, H2);
  if (need_lm) {
    MatmulCall mc;
    mc.With(pk_.lm_head);
    mc.m = m;
    mc.src = h;
    mc.lda = H2;
    mc.bias = w_.lm_bias.data;
    mc.dst = l;
    mc.ldc = V;
    RETURN_IF_ERROR(Matmul(mc));
  }
  for (const Segment& s : segs) {
    const ForwardDoc& doc = docs_[s.doc];
    const OutputView& o = doc.dst;
    const float* hs = h + s.row * H2;
    const float* ls = l + s.row * V;
    if (!direct && (outs & kOutputHiddenStates))
      std::memcpy(o.hidden_states + s.pos * H2, hs, sizeof(float) * s.count * H2);
    if (!direct && (outs & kOutputLogits)) std::memcpy(o.logits + s.pos * V, ls, sizeof(float) * s.count * V);
    if (outs & kOutputEmbedding) {
      double* e = emb_sum + s.doc * H2;
      for (int64_t i = 0; i < s.count; ++i)
        for (int64_t j = 0; j < H2; ++j) e[j] += hs[i * H2 + j];
    }
    if (!(outs & kOutputTokenLogprobs)) continue;
    if (s.pos == 0) o.token_logprobs[0] = 0.f;
    const int64_t n = std::min(s.count, doc.output_length - 1 - s.pos);  // rows with a next token
#pragma omp parallel for schedule(static) if (n * V >= 65536)
    for (int64_t i = 0; i < n; ++i) {
      const float* row = ls + i * V;
      const float lse = LogSumExp(row, V, scratch + static_cast<int64_t>(omp_get_thread_num()) * V);
      o.token_logprobs[s.pos + i + 1] = row[doc.ids[s.pos + i + 1]] - lse;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunForward(const ReformerModel& model, DnnlContext* ctx, Workspace* ws, int64_t tile_rows,
                        const std::vector<ForwardDoc>& docs, const ForwardOptions& opt, ForwardOutputs* out) {
  std::vector<int64_t> padded_lengths;
  std::vector<bool> padding_buckets;
  for (const ForwardDoc& doc : docs) {
    padded_lengths.push_back(doc.padded_length);
    padding_buckets.push_back(doc.padding_bucket);
  }
  // Working blocks are recycled up to this forward's planned peak (plus rounding slack); what the
  // workspace already caches beyond that is returned to the OS now (workspace.h).
  const size_t plan = PlanPeakBytes(model.config(), padded_lengths, padding_buckets, opt.outputs, tile_rows,
                                    omp_get_max_threads(), model.compute_type());
  ws->set_cache_limit(plan + plan / 8 + (size_t{16} << 20));
  ForwardPass pass(model, ctx, ws, docs, opt, PlanRows(padded_lengths, tile_rows), out);
  return pass.Run();
}

PostOp ActivationPostOp(Activation a, float* alpha) {
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

}  // namespace reformer
