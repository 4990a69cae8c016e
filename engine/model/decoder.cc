// Decoder: the prompt pass (a forward that fills the cache through forward.h's hooks), the batched
// cached step, and the recompute path. docs/generation.md describes the algorithm.
#include "engine/model/decoder.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/dnnl/matmul.h"
#include "engine/model/decode_cache.h"
#include "engine/model/decode_step.h"
#include "engine/model/forward.h"
#include "engine/model/weights.h"
#include "engine/ops/cached_attention.h"
#include "engine/ops/kernels/kernel_table.h"
#include "engine/ops/row_gemm.h"
#include "engine/tensor/workspace.h"

namespace reformer {
namespace {

// A step's threads each take at least this many sequences (fewer: the calling thread alone; a
// fork costs about as much as a sequence's step).
constexpr int64_t kStepRowsPerThread = 1;

// The rows of a cached step, row i = sequence i; allocated before the step's threads start, each
// thread then works on its own rows only.
struct StepRows {
  int64_t n = 0;
  float* a = nullptr;     // [n, H] residual stream A
  float* z = nullptr;     // [n, H] residual stream Z
  float* y = nullptr;     // [n, H] LayerNorm output
  float* proj = nullptr;  // [heads][n][3 * dh] projections (row stride 3 dh in every layer)
  float* o = nullptr;     // [n, heads * dh] attention outputs
  float* f = nullptr;     // [n, F] feed-forward hidden
  float* h = nullptr;     // [n, 2H] final LayerNorm
  float* lg = nullptr;    // [n, V] logits
  float* gemm = nullptr;  // [n, max_k + 1] RowGemm's converted rows (bfloat16 / int8 weights), or null
  int64_t gemm_ld = 0;
};

// Largest K of the step's products.
int64_t MaxStepK(const ReformerConfig& c) {
  return std::max({c.hidden_size, c.num_attention_heads * c.attention_head_size, c.feed_forward_size,
                   2 * c.hidden_size});
}

// Floats of StepRows per row (gemm included).
int64_t StepRowFloats(const ReformerConfig& c) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads, dh = c.attention_head_size;
  return 3 * H + nh * 3 * dh + nh * dh + c.feed_forward_size + 2 * H + c.vocab_size + MaxStepK(c) + 1;
}

// One step's product on the calling thread (the step's threads split rows, not columns).
void StepGemm(const PackedWeight& w, int64_t m, const float* a, int64_t lda, float* c, int64_t ldc, float* gemm,
              const float* bias = nullptr, bool accumulate = false, PostOp op = PostOp::kNone, float alpha = 0.f) {
  RowGemmCall g;
  g.With(w);
  g.m = m;
  g.a = a;
  g.lda = lda;
  g.c = c;
  g.ldc = ldc;
  g.bias = bias;
  g.accumulate = accumulate;
  g.post_op = op;
  g.post_alpha = alpha;
  g.parallel = false;
  g.scratch = gemm;
  RowGemm(g);
}

// Token ids of a forward document, padded as engine-numerics §4 (and engine/model/session.cc) pads
// them.
struct PaddedDocs {
  std::vector<int32_t> ids;
  std::vector<uint8_t> masks;
  std::vector<ForwardDoc> docs;
};

PaddedDocs PadDocuments(const ReformerConfig& c, const std::vector<int64_t>& lengths,
                        const std::vector<const int32_t*>& tokens) {
  PaddedDocs p;
  int64_t total = 0;
  for (int64_t t0 : lengths) total += c.PaddedLength(t0);
  p.ids.resize(total);
  p.masks.resize(total);
  p.docs.resize(lengths.size());
  int64_t off = 0;
  for (size_t d = 0; d < lengths.size(); ++d) {
    const int64_t t0 = lengths[d], t = c.PaddedLength(t0);
    std::copy(tokens[d], tokens[d] + t0, p.ids.begin() + off);
    std::fill(p.ids.begin() + off + t0, p.ids.begin() + off + t, static_cast<int32_t>(c.pad_token_id));
    std::fill(p.masks.begin() + off, p.masks.begin() + off + t0, uint8_t{1});
    ForwardDoc& fd = p.docs[d];
    fd.ids = p.ids.data() + off;
    fd.padded_length = t;
    fd.output_length = t0;
    fd.mask = t > t0 ? p.masks.data() + off : nullptr;
    fd.padding_bucket = t > t0;
    off += t;
  }
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DecodeState

absl::Status DecodeState::Validate(const ReformerConfig& c, absl::Span<const int32_t> prompt,
                                   int64_t max_new_tokens, DecodeMode mode) {
  if (!c.is_decoder)
    return absl::InvalidArgumentError("the model is not causal (is_decoder: false): it cannot generate");
  const int64_t t0 = static_cast<int64_t>(prompt.size());
  if (t0 == 0) return absl::InvalidArgumentError("the prompt is empty");
  if (max_new_tokens < 1)
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  const int64_t ctx = c.context_length();
  if (t0 + max_new_tokens > ctx)
    return absl::InvalidArgumentError(absl::StrCat("prompt (", t0, " tokens) + max_new_tokens (", max_new_tokens,
                                                   ") = ", t0 + max_new_tokens, " exceeds the model's context of ",
                                                   ctx, " positions"));
  // The forwards pad to the chunk lcm (engine-numerics §4.1): the prompt's, and in recompute mode
  // every step's over prompt + tokens so far; they must still fit.
  const bool recompute = mode == DecodeMode::kRecompute;
  const int64_t longest = recompute ? t0 + max_new_tokens - 1 : t0, padded = c.PaddedLength(longest);
  if (padded > ctx)
    return absl::InvalidArgumentError(absl::StrCat(recompute ? "prompt + max_new_tokens - 1 = " : "the prompt's ",
                                                   longest, " tokens pad to ", padded, " positions (chunk length ",
                                                   c.chunk_lcm(), "), beyond the model's context of ", ctx));
  for (int64_t i = 0; i < t0; ++i)
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", prompt[i], " at position ", i,
                                                     " is outside [0, ", c.vocab_size, ")"));
  return absl::OkStatus();
}

size_t DecodeState::EstimateBytes(const ReformerConfig& c, int64_t prompt_length, int64_t max_new_tokens,
                                  DecodeMode mode) {
  return sizeof(DecodeState) + PlanCache(c, prompt_length, max_new_tokens, mode).bytes;
}

absl::StatusOr<std::unique_ptr<DecodeState>> DecodeState::Create(const ReformerModel& model,
                                                                 absl::Span<const int32_t> prompt,
                                                                 int64_t max_new_tokens, DecodeMode mode) {
  const ReformerConfig& c = model.config();
  RETURN_IF_ERROR(Validate(c, prompt, max_new_tokens, mode));
  std::unique_ptr<DecodeState> s(new DecodeState());
  s->mode_ = mode;
  s->prompt_length_ = static_cast<int64_t>(prompt.size());
  ASSIGN_OR_RETURN(s->cache_,
                   DecodeCache::Create(c, PlanCache(c, s->prompt_length_, max_new_tokens, mode)));
  std::copy(prompt.begin(), prompt.end(), s->cache_->tokens());
  return s;
}

DecodeState::~DecodeState() = default;
int64_t DecodeState::capacity() const { return cache_->plan().capacity; }
size_t DecodeState::bytes() const { return sizeof(DecodeState) + cache_->plan().bytes; }

// ---------------------------------------------------------------------------------------------
// Decoder

class Decoder::Impl {
 public:
  Impl(std::shared_ptr<const ReformerModel> model, const DecoderOptions& options, std::unique_ptr<DnnlContext> ctx,
       int64_t tile)
      : model_(std::move(model)), c_(model_->config()), options_(options), ctx_(std::move(ctx)), tile_(tile) {
    act_ = ActivationPostOp(c_.hidden_act, &act_alpha_);
    scratch_.resize(std::max(1, options_.num_threads));
    for (StepScratch& s : scratch_) s.Reserve(c_);
  }

  absl::Status Prefill(absl::Span<DecodeState* const> seqs, absl::Span<float* const> logits,
                       const CancelFn& cancel, const BetweenLayersFn& between);
  absl::Status Step(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                    absl::Span<float* const> logits, const CancelFn& cancel);
  size_t ReleaseWorkspace() {
    const size_t cached = ws_.cached_bytes();
    ws_.Trim();
    return cached;
  }
  size_t retained_workspace_bytes() const { return ws_.cached_bytes(); }

 private:
  absl::Status Forward(absl::Span<DecodeState* const> seqs, const std::vector<int64_t>& lengths,
                       const CancelFn& cancel, const BetweenLayersFn& between, bool fill_cache,
                       absl::Span<float* const> logits);
  void CopyProjections(DecodeState* s, int64_t layer, int64_t head, const float* proj, int64_t ld);
  void CacheBuckets(const ForwardOutputs& out, absl::Span<DecodeState* const> seqs, const PaddedDocs& p);
  absl::Status StepCached(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                          absl::Span<float* const> logits);
  StepRows AllocateStep(int64_t n);
  void RunRows(const StepRows& b, absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
               absl::Span<float* const> logits, int64_t r0, int64_t r1, int thread);
  void LayerRows(const StepRows& b, absl::Span<DecodeState* const> seqs, int64_t li, int64_t r0, int64_t r1,
                 int thread);
  void AttendSequence(DecodeState* s, int64_t li, const float* proj, int64_t head_stride, StepScratch* scratch,
                      float* out);
  void Embed(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens, int64_t r0, int64_t r1,
             float* x) const;
  void HeadLogits(const float* a, const float* z, int64_t rows, float* h, float* lg, float* gemm,
                  float* const* logits) const;
  float* Buffer(size_t index, size_t n);

  std::shared_ptr<const ReformerModel> model_;
  const ReformerConfig& c_;
  DecoderOptions options_;
  std::unique_ptr<DnnlContext> ctx_;
  int64_t tile_;
  Workspace ws_;
  PostOp act_ = PostOp::kNone;
  float act_alpha_ = 0.f;
  std::vector<StepScratch> scratch_;              // one per OpenMP thread
  std::vector<std::vector<float>> buffers_;       // step rows, grown on demand (never inside a step's threads)
};

float* Decoder::Impl::Buffer(size_t index, size_t n) {
  if (buffers_.size() <= index) buffers_.resize(index + 1);
  if (buffers_[index].size() < n) buffers_[index].resize(n);
  return buffers_[index].data();
}

// Word embedding plus the position embedding of each sequence's next position
// (engine-numerics §5.1, §13), rows [r0, r1).
void Decoder::Impl::Embed(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens, int64_t r0,
                          int64_t r1, float* x) const {
  const ModelWeights& w = model_->weights();
  const int64_t H = c_.hidden_size;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t t = seqs[i]->length();
    const float* we = w.word_embeddings.data + static_cast<int64_t>(tokens[i]) * H;
    float* xi = x + i * H;
    if (c_.axial_pos_embds) {
      const int64_t a1 = c_.axial_pos_shape[1], d0 = c_.axial_pos_embds_dim[0], d1 = c_.axial_pos_embds_dim[1];
      const float* p0 = w.axial_pos0.data + (t / a1) * d0;
      const float* p1 = w.axial_pos1.data + (t % a1) * d1;
      for (int64_t j = 0; j < d0; ++j) xi[j] = we[j] + p0[j];
      for (int64_t j = 0; j < d1; ++j) xi[d0 + j] = we[d0 + j] + p1[j];
    } else {
      const float* pe = w.position_embeddings.data + t * H;
      for (int64_t j = 0; j < H; ++j) xi[j] = we[j] + pe[j];
    }
  }
}

// Final LayerNorm of concat(A, Z) and the LM head for `rows` rows (engine-numerics §5.5, §5.6),
// each row on its own (the forward's LayerNorm kernel of a concatenation): logits[i] ([V]).
void Decoder::Impl::HeadLogits(const float* a, const float* z, int64_t rows, float* h, float* lg, float* gemm,
                               float* const* logits) const {
  const ModelWeights& w = model_->weights();
  const int64_t H = c_.hidden_size, V = c_.vocab_size;
  const auto layer_norm = kernels::Active().layer_norm_row;
  for (int64_t i = 0; i < rows; ++i)
    layer_norm(a + i * H, H, z + i * H, H, w.final_ln_weight.data, w.final_ln_bias.data, c_.layer_norm_eps,
               h + i * 2 * H);
  StepGemm(model_->packed().lm_head, rows, h, 2 * H, lg, V, gemm, w.lm_bias.data);
  for (int64_t i = 0; i < rows; ++i) std::memcpy(logits[i], lg + i * V, sizeof(float) * V);
}

// The forward over each sequence's first lengths[i] tokens (a ragged batch): logits of their last
// positions; with fill_cache, the prompt pass of engine-numerics §13 (projections and sort keys
// cached).
absl::Status Decoder::Impl::Forward(absl::Span<DecodeState* const> seqs, const std::vector<int64_t>& lengths,
                                    const CancelFn& cancel, const BetweenLayersFn& between, bool fill_cache,
                                    absl::Span<float* const> logits) {
  const int64_t n = static_cast<int64_t>(seqs.size()), H = c_.hidden_size, layers = c_.num_layers();
  std::vector<const int32_t*> tokens;
  for (DecodeState* s : seqs) tokens.push_back(s->cache_->tokens());
  const PaddedDocs p = PadDocuments(c_, lengths, tokens);
  std::vector<float> last(2 * n * H);  // A and Z rows of each last position
  ForwardOptions fo;
  fo.outputs = 0;
  fo.want_buckets = fill_cache;
  fo.cancel = &cancel;
  fo.at_layer = [&](int64_t li, const float* a, const float* z, const std::vector<int64_t>& first_row) -> absl::Status {
    if (li == layers) {
      for (int64_t d = 0; d < n; ++d) {
        const int64_t row = first_row[d] + lengths[d] - 1;
        std::memcpy(last.data() + d * H, a + row * H, sizeof(float) * H);
        std::memcpy(last.data() + (n + d) * H, z + row * H, sizeof(float) * H);
      }
      return absl::OkStatus();
    }
    return li > 0 && between ? between(li) : absl::OkStatus();
  };
  if (between) fo.between_parts = between;
  if (fill_cache)
    fo.on_head = [&](int64_t li, int64_t h, int64_t d, const float* proj, int64_t ld) {
      CopyProjections(seqs[d], li, h, proj, ld);
    };
  ForwardOutputs out;
  RETURN_IF_ERROR(RunForward(*model_, ctx_.get(), &ws_, tile_, p.docs, fo, &out));
  if (fill_cache) CacheBuckets(out, seqs, p);
  const StepRows b = AllocateStep(n);
  HeadLogits(last.data(), last.data() + n * H, n, b.h, b.lg, b.gemm, logits.data());
  return absl::OkStatus();
}

namespace {

// Position t of an LSH layer's head: knorm(qk) | v (engine-numerics §7.1, normalised once), and the
// raw qk while a later step will hash the cache.
void StoreLshRow(DecodeCache* cache, int64_t li, int64_t h, int64_t t, const float* qk_v, bool raw) {
  const int64_t dh = cache->row_width() / 2;
  float* row = cache->Row(li, t, h);
  KeyNormRow(qk_v, dh, row);
  std::memcpy(row + dh, qk_v + dh, sizeof(float) * dh);
  if (raw) std::memcpy(cache->RawQk(li, t, h), qk_v, sizeof(float) * dh);
}

}  // namespace

// The prompt's projections of one head into the cache: LSH knorm(qk) | v of every real position; local
// k / sqrt(dh) | v (as LocalAttentionHead scales them) of the positions a later step can reach.
void Decoder::Impl::CopyProjections(DecodeState* s, int64_t li, int64_t h, const float* proj, int64_t ld) {
  DecodeCache* cache = s->cache_.get();
  const int64_t t0 = s->prompt_length(), dh = c_.attention_head_size;
  if (c_.attn_layers[li] == AttnType::kLsh) {
    const int64_t raw = std::min(t0, cache->plan().raw_rows);
#pragma omp parallel for schedule(static) if (t0 >= 4096)
    for (int64_t t = 0; t < t0; ++t) StoreLshRow(cache, li, h, t, proj + t * ld, t < raw);
    return;
  }
  const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
  for (int64_t t = std::max<int64_t>(0, t0 - cache->layer(li).ring_rows); t < t0; ++t) {
    float* row = cache->Row(li, t, h);
    const float* src = proj + t * ld;
    for (int64_t j = 0; j < dh; ++j) row[j] = src[dh + j] / sqrt_dh;
    std::memcpy(row + dh, src + 2 * dh, sizeof(float) * dh);
  }
}

// Sort keys of the prompt's real positions (HF caches buckets[..., :T0], engine-numerics §13) into
// the round orders, relative to their round offsets n * nb; the largest key (offsets included) for
// HF's test.
void Decoder::Impl::CacheBuckets(const ForwardOutputs& out, absl::Span<DecodeState* const> seqs,
                                 const PaddedDocs& p) {
  const int64_t nh = c_.num_hashes, heads = c_.num_attention_heads, nb = c_.total_buckets();
  std::vector<int32_t> rel, counts(RelativeKeyRange(c_) + 1);
  for (size_t slot = 0; slot < out.bucket_layers.size(); ++slot) {
    const int64_t li = out.bucket_layers[slot];
    for (size_t d = 0; d < seqs.size(); ++d) {
      const int64_t t = p.docs[d].padded_length, t0 = seqs[d]->prompt_length();
      if (t <= c_.lsh_attn_chunk_length) continue;
      DecodeCache::Layer& layer = seqs[d]->cache_->layer(li);
      rel.resize(t0);
      int64_t max_key = -1;
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t r = 0; r < nh; ++r) {
          const int32_t* keys = out.buckets[slot][d].data() + (h * nh + r) * t;
          for (int64_t i = 0; i < t0; ++i) {
            max_key = std::max<int64_t>(max_key, keys[i]);
            rel[i] = keys[i] - static_cast<int32_t>(r * nb);
          }
          layer.orders[h * nh + r].Reset(rel.data(), 1, t0, RelativeKeyRange(c_), counts.data());
        }
      layer.hashed = true;
      layer.max_key = max_key;
    }
  }
}

StepRows Decoder::Impl::AllocateStep(int64_t n) {
  const int64_t H = c_.hidden_size, nh = c_.num_attention_heads, dh = c_.attention_head_size;
  StepRows b;
  b.n = n;
  b.a = Buffer(0, n * H);
  b.z = Buffer(1, n * H);
  b.y = Buffer(2, n * H);
  b.proj = Buffer(3, nh * n * 3 * dh);
  b.o = Buffer(4, n * nh * dh);
  b.f = Buffer(5, n * c_.feed_forward_size);
  b.h = Buffer(6, n * 2 * H);
  b.lg = Buffer(7, n * c_.vocab_size);
  if (model_->compute_type() != ComputeType::kFloat32) {
    b.gemm_ld = MaxStepK(c_) + 1;
    b.gemm = Buffer(8, n * b.gemm_ld);
  }
  return b;
}

// One cached step for every sequence. The rows are independent all the way (RowGemm, row-wise
// LayerNorm, attention per sequence), so the threads split the sequences, each running its own
// rows through every layer: one fork per step and no barrier between the step's phases. A row's
// numbers do not depend on which thread or which other rows it ran with (docs/generation.md §4).
absl::Status Decoder::Impl::StepCached(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                                       absl::Span<float* const> logits) {
  const int64_t n = static_cast<int64_t>(seqs.size());
  const StepRows b = AllocateStep(n);
  const int threads = static_cast<int>(std::min<int64_t>(options_.num_threads, n / kStepRowsPerThread));
#pragma omp parallel num_threads(std::max(threads, 1)) if (threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    RunRows(b, seqs, tokens, logits, n * t / nt, n * (t + 1) / nt, t);
  }
  for (int64_t i = 0; i < n; ++i) {
    DecodeState* s = seqs[i];
    s->cache_->tokens()[s->length_] = tokens[i];
    ++s->length_;
  }
  return absl::OkStatus();
}

// Rows [r0, r1) of a step, on one thread: embedding, every layer, logits.
void Decoder::Impl::RunRows(const StepRows& b, absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                            absl::Span<float* const> logits, int64_t r0, int64_t r1, int thread) {
  if (r1 <= r0) return;
  const int64_t H = c_.hidden_size;
  Embed(seqs, tokens, r0, r1, b.a);
  std::memcpy(b.z + r0 * H, b.a + r0 * H, sizeof(float) * (r1 - r0) * H);
  for (int64_t li = 0; li < c_.num_layers(); ++li) LayerRows(b, seqs, li, r0, r1, thread);
  HeadLogits(b.a + r0 * H, b.z + r0 * H, r1 - r0, b.h + r0 * 2 * H, b.lg + r0 * c_.vocab_size,
             b.gemm ? b.gemm + r0 * b.gemm_ld : nullptr, logits.data() + r0);
}

// engine-numerics §5.2 for rows [r0, r1): A += Attention(LN(Z)); Z += FFN(LN(A)).
void Decoder::Impl::LayerRows(const StepRows& b, absl::Span<DecodeState* const> seqs, int64_t li, int64_t r0,
                              int64_t r1, int thread) {
  const int64_t n = b.n, m = r1 - r0, H = c_.hidden_size, F = c_.feed_forward_size;
  const int64_t nh = c_.num_attention_heads, dh = c_.attention_head_size;
  const LayerWeights& w = model_->weights().layers[li];
  const PackedLayer& pk = model_->packed().layers[li];
  // One row stride for every layer (LSH rows use 2 dh of it): the threads may be in different
  // layers at once, and their rows must never overlap.
  const int64_t ldp = 3 * dh;
  const auto layer_norm = kernels::Active().layer_norm_row;
  float* a = b.a + r0 * H;
  float* z = b.z + r0 * H;
  float* y = b.y + r0 * H;
  float* o = b.o + r0 * nh * dh;
  float* gemm = b.gemm ? b.gemm + r0 * b.gemm_ld : nullptr;
  for (int64_t i = 0; i < m; ++i)
    layer_norm(z + i * H, H, nullptr, 0, w.attn_ln_weight.data, w.attn_ln_bias.data, c_.layer_norm_eps, y + i * H);
  for (int64_t h = 0; h < nh; ++h) StepGemm(pk.head_proj[h], m, y, H, b.proj + (h * n + r0) * ldp, ldp, gemm);
  for (int64_t i = r0; i < r1; ++i)
    AttendSequence(seqs[i], li, b.proj + i * ldp, n * ldp, &scratch_[thread], b.o + i * nh * dh);
  StepGemm(pk.attn_out, m, o, nh * dh, a, H, gemm, nullptr, true);
  for (int64_t i = 0; i < m; ++i)
    layer_norm(a + i * H, H, nullptr, 0, w.ff_ln_weight.data, w.ff_ln_bias.data, c_.layer_norm_eps, y + i * H);
  float* f = b.f + r0 * F;
  StepGemm(pk.ff_in, m, y, H, f, F, gemm, w.ff_in_bias.data, false, act_, act_alpha_);
  StepGemm(pk.ff_out, m, f, F, z, H, gemm, w.ff_out_bias.data, true);
}

// The attention of one sequence's new token in layer li, every head: stores its projections (head
// h's at proj + h * head_stride) at its position, attends against the cache, writes out[heads * dh].
void Decoder::Impl::AttendSequence(DecodeState* s, int64_t li, const float* proj, int64_t head_stride,
                                   StepScratch* scratch, float* out) {
  const int64_t nh = c_.num_attention_heads, dh = c_.attention_head_size, L = s->length();
  DecodeCache* cache = s->cache_.get();
  DecodeCache::Layer& l = cache->layer(li);
  if (l.type == AttnType::kLocal) {
    const float sqrt_dh = static_cast<float>(std::sqrt(static_cast<double>(dh)));
    for (int64_t h = 0; h < nh; ++h) {
      const float* src = proj + h * head_stride;
      float* row = cache->Row(li, L, h);
      for (int64_t j = 0; j < dh; ++j) row[j] = src[dh + j] / sqrt_dh;
      std::memcpy(row + dh, src + 2 * dh, sizeof(float) * dh);
      LocalStepHead(c_, cache, li, h, L, src, scratch, out + h * dh);
    }
    return;
  }
  // HF's increase_num_buckets: the cached keys carry padding-bucket round offsets
  // (engine-numerics §13); decided on the keys cached before this step.
  const bool increase = l.hashed && l.max_key > c_.num_hashes * c_.total_buckets() - 1;
  const float* rot = model_->weights().layers[li].rotations.data;
  const int64_t rot_block = dh * c_.num_hashes * (c_.rotation_size() / 2);
  int64_t max_key = -1;
  for (int64_t h = 0; h < nh; ++h) {
    const float* src = proj + h * head_stride;
    StoreLshRow(cache, li, h, L, src, L < cache->plan().raw_rows);
    max_key = std::max(max_key, LshStepHead(c_, cache, li, h, L, src, rot ? rot + h * rot_block : nullptr, increase,
                                            scratch, out + h * dh));
  }
  if (max_key < 0) return;  // still plain attention: nothing hashed
  l.hashed = true;
  l.max_key = std::max(l.max_key, max_key);
}

absl::Status Decoder::Impl::Prefill(absl::Span<DecodeState* const> seqs, absl::Span<float* const> logits,
                                    const CancelFn& cancel, const BetweenLayersFn& between) {
  omp_set_num_threads(options_.num_threads);
  if (logits.size() != seqs.size())
    return absl::InvalidArgumentError(absl::StrCat(seqs.size(), " sequences but ", logits.size(), " logits"));
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seqs[i] == nullptr || seqs[i]->prefilled() || logits[i] == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " is null, prefilled or has no logits"));
  for (DecodeMode mode : {DecodeMode::kCached, DecodeMode::kRecompute}) {
    std::vector<DecodeState*> group;
    std::vector<float*> dst;
    std::vector<int64_t> lengths;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (seqs[i]->mode() != mode) continue;
      group.push_back(seqs[i]);
      dst.push_back(logits[i]);
      lengths.push_back(seqs[i]->prompt_length());
    }
    if (group.empty()) continue;
    RETURN_IF_ERROR(Forward(absl::MakeSpan(group), lengths, cancel, between, mode == DecodeMode::kCached,
                            absl::MakeSpan(dst)));
    for (DecodeState* s : group) s->length_ = s->prompt_length();
  }
  return absl::OkStatus();
}

absl::Status Decoder::Impl::Step(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                                 absl::Span<float* const> logits, const CancelFn& cancel) {
  omp_set_num_threads(options_.num_threads);
  if (tokens.size() != seqs.size() || logits.size() != seqs.size())
    return absl::InvalidArgumentError(absl::StrCat(seqs.size(), " sequences, ", tokens.size(), " tokens, ",
                                                   logits.size(), " logits"));
  std::vector<DecodeState*> sorted(seqs.begin(), seqs.end());
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    return absl::InvalidArgumentError("a sequence appears twice in one step");
  for (size_t i = 0; i < seqs.size(); ++i) {
    const DecodeState* s = seqs[i];
    if (s == nullptr || !s->prefilled() || logits[i] == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " is null, not prefilled or has no logits"));
    if (s->length() >= s->capacity())
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " is full: ", s->length(), " of ",
                                                     s->capacity(), " positions"));
    if (tokens[i] < 0 || tokens[i] >= c_.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " of sequence ", i,
                                                     " is outside [0, ", c_.vocab_size, ")"));
  }
  if (cancel && cancel()) return absl::CancelledError("step cancelled");
  std::vector<DecodeState*> cached, recompute;
  std::vector<int32_t> cached_tokens;
  std::vector<float*> cached_logits, recompute_logits;
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i]->mode() == DecodeMode::kCached) {
      cached.push_back(seqs[i]);
      cached_tokens.push_back(tokens[i]);
      cached_logits.push_back(logits[i]);
    } else {
      recompute.push_back(seqs[i]);
      recompute_logits.push_back(logits[i]);
      lengths.push_back(seqs[i]->length() + 1);
    }
  }
  if (!cached.empty())
    RETURN_IF_ERROR(StepCached(absl::MakeSpan(cached), cached_tokens, absl::MakeSpan(cached_logits)));
  if (recompute.empty()) return absl::OkStatus();
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seqs[i]->mode() == DecodeMode::kRecompute) seqs[i]->cache_->tokens()[seqs[i]->length()] = tokens[i];
  RETURN_IF_ERROR(Forward(absl::MakeSpan(recompute), lengths, cancel, nullptr, false,
                          absl::MakeSpan(recompute_logits)));
  for (DecodeState* s : recompute) ++s->length_;
  return absl::OkStatus();
}

Decoder::Decoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Decoder::~Decoder() = default;

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::Create(std::shared_ptr<const ReformerModel> model,
                                                         const DecoderOptions& options) {
  if (!model) return absl::InvalidArgumentError("Decoder::Create: null model");
  if (options.num_threads < 1)
    return absl::InvalidArgumentError(absl::StrCat("num_threads must be >= 1, got ", options.num_threads));
  const int64_t tile = TileRowsForBudget(model->config(), options.workspace_budget_bytes, options.tile_rows);
  if (tile == 0)
    return absl::ResourceExhaustedError(absl::StrCat("workspace budget of ", options.workspace_budget_bytes,
                                                     " bytes is below one 256-token tile for this model"));
  ASSIGN_OR_RETURN(std::unique_ptr<DnnlContext> ctx, DnnlContext::Create());
  return std::unique_ptr<Decoder>(new Decoder(std::make_unique<Impl>(std::move(model), options, std::move(ctx), tile)));
}

absl::Status Decoder::Prefill(absl::Span<DecodeState* const> seqs, absl::Span<float* const> logits,
                              const CancelFn& cancel, const BetweenLayersFn& between_layers) {
  return impl_->Prefill(seqs, logits, cancel, between_layers);
}

absl::Status Decoder::Step(absl::Span<DecodeState* const> seqs, absl::Span<const int32_t> tokens,
                           absl::Span<float* const> logits, const CancelFn& cancel) {
  return impl_->Step(seqs, tokens, logits, cancel);
}

size_t Decoder::ReleaseWorkspace() { return impl_->ReleaseWorkspace(); }
size_t Decoder::retained_workspace_bytes() const { return impl_->retained_workspace_bytes(); }

size_t Decoder::EstimateStepBytes(const ReformerConfig& c, int64_t n, int num_threads) {
  const size_t rows = sizeof(float) * n * StepRowFloats(c);  // StepRows (RowGemm's rows included)
  StepScratch s;
  s.Reserve(c);
  return rows + static_cast<size_t>(std::max(1, num_threads)) * s.bytes();
}

}  // namespace reformer
