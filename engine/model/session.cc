// Session: one worker thread's handle on a model (oneDNN context, workspace, tile size).
#include <omp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/dnnl/matmul.h"
#include "engine/model/engine_api.h"
#include "engine/model/forward.h"
#include "engine/tensor/workspace.h"

namespace reformer {
namespace {

class SessionImpl final : public Session {
 public:
  SessionImpl(std::shared_ptr<const ReformerModel> model, const SessionOptions& options,
              std::unique_ptr<DnnlContext> ctx, int64_t tile_rows)
      : model_(std::move(model)), options_(options), ctx_(std::move(ctx)), tile_rows_(tile_rows) {
    ctx_->set_workspace(&ws_);  // bfloat16 / int8 conversion buffers are counted there
  }
  using Session::RunDocuments;
  using Session::RunPadded;

  absl::Status RunDocuments(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                            absl::Span<const OutputView> dst, const CancelFn& cancel) override {
    omp_set_num_threads(options_.num_threads);
    const ReformerConfig& c = model_->config();
    if (documents.empty()) return absl::InvalidArgumentError("no documents");
    if (dst.size() != documents.size())
      return absl::InvalidArgumentError(
          absl::StrCat(dst.size(), " output views for ", documents.size(), " documents"));
    std::vector<int64_t> padded(documents.size());
    int64_t total = 0;
    for (size_t d = 0; d < documents.size(); ++d) {
      const int64_t t0 = static_cast<int64_t>(documents[d].size());
      if (t0 == 0) return absl::InvalidArgumentError(absl::StrCat("document ", d, " is empty"));
      padded[d] = c.PaddedLength(t0);
      if (padded[d] > c.context_length())
        return absl::InvalidArgumentError(
            absl::StrCat("document ", d, " has ", t0, " tokens (", padded[d],
                         " after padding to the chunk length); the model accepts at most ",
                         c.context_length()));
      RETURN_IF_ERROR(CheckIds(documents[d].data(), t0, absl::StrCat("document ", d)));
      RETURN_IF_ERROR(CheckView(dst[d], outputs, absl::StrCat("document ", d)));
      total += padded[d];
    }
    WsBuffer<int32_t> ids(&ws_, total, kUninitialized);
    WsBuffer<uint8_t> masks(&ws_, total, kUninitialized);
    std::vector<ForwardDoc> docs(documents.size());
    int64_t off = 0;
    for (size_t d = 0; d < documents.size(); ++d) {
      const int64_t t0 = static_cast<int64_t>(documents[d].size());
      std::copy(documents[d].begin(), documents[d].end(), ids.data() + off);
      std::fill(ids.data() + off + t0, ids.data() + off + padded[d], static_cast<int32_t>(c.pad_token_id));
      std::fill(masks.data() + off, masks.data() + off + t0, uint8_t{1});
      std::fill(masks.data() + off + t0, masks.data() + off + padded[d], uint8_t{0});
      ForwardDoc& fd = docs[d];
      fd.ids = ids.data() + off;
      fd.padded_length = padded[d];
      fd.output_length = t0;
      // A document alone has a mask only when internal padding was added (engine-numerics §4.2).
      fd.mask = padded[d] > t0 ? masks.data() + off : nullptr;
      fd.padding_bucket = padded[d] > t0;
      fd.dst = dst[d];
      off += padded[d];
    }
    ForwardOptions fo;
    fo.outputs = outputs;
    fo.cancel = &cancel;
    ForwardOutputs out;
    RETURN_IF_ERROR(RunForward(*model_, ctx_.get(), &ws_, tile_rows_, docs, fo, &out));
    stats_ = out.stats;
    return absl::OkStatus();
  }

  absl::Status RunPadded(const PaddedBatch& batch, const PaddedOutputView& dst, PaddedBuckets* buckets,
                         const CancelFn& cancel) override {
    omp_set_num_threads(options_.num_threads);
    const ReformerConfig& c = model_->config();
    const int64_t B = batch.batch, T0 = batch.length;
    if (B <= 0 || T0 <= 0) return absl::InvalidArgumentError("empty batch");
    if (static_cast<int64_t>(batch.input_ids.size()) != B * T0)
      return absl::InvalidArgumentError(
          absl::StrCat("input_ids has ", batch.input_ids.size(), " entries, expected ", B * T0));
    const bool has_mask = !batch.attention_mask.empty();
    if (has_mask && static_cast<int64_t>(batch.attention_mask.size()) != B * T0)
      return absl::InvalidArgumentError(absl::StrCat("attention_mask has ", batch.attention_mask.size(),
                                                     " entries, expected ", B * T0));
    RETURN_IF_ERROR(CheckIds(batch.input_ids.data(), B * T0, "input_ids"));
    const int64_t T = c.PaddedLength(T0);
    if (T > c.context_length())
      return absl::InvalidArgumentError(absl::StrCat("sequence length ", T0, " (", T,
                                                     " after padding) exceeds the model's ",
                                                     c.context_length()));
    const bool mask_exists = has_mask || T > T0;
    WsBuffer<int32_t> ids(&ws_, B * T, kUninitialized);
    WsBuffer<uint8_t> masks(&ws_, B * T, kUninitialized);
    bool any_pad = false;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        ids[b * T + t] = t < T0 ? batch.input_ids[b * T0 + t] : static_cast<int32_t>(c.pad_token_id);
        masks[b * T + t] = t < T0 ? (has_mask ? (batch.attention_mask[b * T0 + t] != 0) : 1) : 0;
        any_pad |= masks[b * T + t] == 0;
      }
    }
    const int64_t V = c.vocab_size, H2 = 2 * c.hidden_size;
    std::vector<ForwardDoc> docs(B);
    for (int64_t b = 0; b < B; ++b) {
      docs[b].ids = ids.data() + b * T;
      docs[b].mask = mask_exists ? masks.data() + b * T : nullptr;
      docs[b].padded_length = T;
      docs[b].output_length = T0;
      // engine-numerics §7.4: "mask has padding" anywhere in the batch
      docs[b].padding_bucket = any_pad;
      if (dst.logits) docs[b].dst.logits = dst.logits + b * T0 * V;
      if (dst.hidden_states) docs[b].dst.hidden_states = dst.hidden_states + b * T0 * H2;
    }
    ForwardOptions fo;
    fo.outputs = (dst.logits ? kOutputLogits : 0u) | (dst.hidden_states ? kOutputHiddenStates : 0u);
    fo.want_buckets = buckets != nullptr;
    fo.cancel = &cancel;
    ForwardOutputs out;
    RETURN_IF_ERROR(RunForward(*model_, ctx_.get(), &ws_, tile_rows_, docs, fo, &out));
    stats_ = out.stats;
    if (buckets) {
      buckets->bucket_layers = out.bucket_layers;
      buckets->buckets.clear();
      for (auto& per_doc : out.buckets) {
        std::vector<int32_t> all;
        for (auto& v : per_doc) all.insert(all.end(), v.begin(), v.end());
        buckets->buckets.push_back(std::move(all));
      }
    }
    return absl::OkStatus();
  }

  const ReformerConfig& config() const override { return model_->config(); }
  RunStats last_run_stats() const override { return stats_; }
  size_t workspace_high_water_bytes() const override { return ws_.high_water(); }
  void reset_workspace_high_water() override { ws_.ResetHighWater(); }
  size_t ReleaseWorkspace() override {
    const size_t cached = ws_.cached_bytes();
    ws_.Trim();
    return cached;
  }
  size_t retained_workspace_bytes() const override { return ws_.cached_bytes(); }

 private:
  absl::Status CheckIds(const int32_t* ids, int64_t n, const std::string& what) const {
    const int64_t V = model_->config().vocab_size;
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= V)
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": token id ", ids[i], " at position ", i, " is outside [0, ", V, ")"));
    return absl::OkStatus();
  }

  static absl::Status CheckView(const OutputView& v, uint32_t outputs, const std::string& what) {
    const struct {
      uint32_t flag;
      const float* p;
      const char* name;
    } need[] = {{kOutputLogits, v.logits, "logits"},
                {kOutputHiddenStates, v.hidden_states, "hidden_states"},
                {kOutputTokenLogprobs, v.token_logprobs, "token_logprobs"},
                {kOutputEmbedding, v.embedding, "embedding"}};
    for (const auto& n : need)
      if ((outputs & n.flag) && n.p == nullptr)
        return absl::InvalidArgumentError(absl::StrCat(what, ": ", n.name, " requested but its output view is null"));
    return absl::OkStatus();
  }

  std::shared_ptr<const ReformerModel> model_;
  SessionOptions options_;
  std::unique_ptr<DnnlContext> ctx_;
  int64_t tile_rows_;
  Workspace ws_;
  RunStats stats_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Session>> Session::Create(std::shared_ptr<const ReformerModel> model,
                                                         const SessionOptions& options) {
  if (!model) return absl::InvalidArgumentError("Session::Create: null model");
  if (options.num_threads < 1)
    return absl::InvalidArgumentError(absl::StrCat("num_threads must be >= 1, got ", options.num_threads));
  const int64_t tile = TileRowsForBudget(model->config(), options.workspace_budget_bytes, options.tile_rows);
  if (tile == 0)
    return absl::ResourceExhaustedError(absl::StrCat("workspace budget of ", options.workspace_budget_bytes,
                                                     " bytes is below one ", kMinTileRows,
                                                     "-token tile for this model"));
  ASSIGN_OR_RETURN(std::unique_ptr<DnnlContext> ctx, DnnlContext::Create());
  return std::unique_ptr<Session>(new SessionImpl(std::move(model), options, std::move(ctx), tile));
}

OutputSizes OutputSizesFor(const ReformerConfig& config, int64_t num_tokens) {
  OutputSizes s;
  s.logits = num_tokens * config.vocab_size;
  s.hidden_states = num_tokens * 2 * config.hidden_size;
  s.token_logprobs = num_tokens;
  s.embedding = 2 * config.hidden_size;
  return s;
}

size_t EstimateOutputBytes(const ReformerConfig& config, absl::Span<const int64_t> lengths, uint32_t outputs) {
  size_t n = 0;
  for (int64_t t : lengths) {
    const OutputSizes s = OutputSizesFor(config, t);
    if (outputs & kOutputLogits) n += s.logits;
    if (outputs & kOutputHiddenStates) n += s.hidden_states;
    if (outputs & kOutputTokenLogprobs) n += s.token_logprobs;
    if (outputs & kOutputEmbedding) n += s.embedding;
  }
  return n * sizeof(float);
}

OutputView DocumentOutput::Allocate(const ReformerConfig& config, int64_t tokens, uint32_t outputs) {
  const OutputSizes s = OutputSizesFor(config, tokens);
  num_tokens = tokens;
  OutputView v;
  auto take = [&](uint32_t flag, std::vector<float>* vec, int64_t n, float** p) {
    if (!(outputs & flag)) return;
    vec->resize(static_cast<size_t>(n));
    *p = vec->data();
  };
  take(kOutputLogits, &logits, s.logits, &v.logits);
  take(kOutputHiddenStates, &hidden_states, s.hidden_states, &v.hidden_states);
  take(kOutputTokenLogprobs, &token_logprobs, s.token_logprobs, &v.token_logprobs);
  take(kOutputEmbedding, &embedding, s.embedding, &v.embedding);
  return v;
}

absl::Status Session::RunDocuments(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                                   std::vector<DocumentOutput>* results, const CancelFn& cancel) {
  results->assign(documents.size(), DocumentOutput());
  std::vector<OutputView> views(documents.size());
  for (size_t d = 0; d < documents.size(); ++d)
    views[d] = (*results)[d].Allocate(config(), static_cast<int64_t>(documents[d].size()), outputs);
  return RunDocuments(documents, outputs, absl::MakeConstSpan(views), cancel);
}

absl::Status Session::RunPadded(const PaddedBatch& batch, PaddedOutput* result, const CancelFn& cancel) {
  const ReformerConfig& c = config();
  if (batch.batch <= 0 || batch.length <= 0) return absl::InvalidArgumentError("empty batch");
  const int64_t rows = batch.batch * batch.length;
  if (static_cast<int64_t>(batch.input_ids.size()) != rows)  // before sizing anything from B and T
    return absl::InvalidArgumentError(
        absl::StrCat("input_ids has ", batch.input_ids.size(), " entries, expected ", rows));
  result->logits.resize(static_cast<size_t>(rows * c.vocab_size));
  result->hidden_states.resize(static_cast<size_t>(rows * 2 * c.hidden_size));
  PaddedOutputView dst{result->logits.data(), result->hidden_states.data()};
  PaddedBuckets buckets;
  RETURN_IF_ERROR(RunPadded(batch, dst, &buckets, cancel));
  result->buckets = std::move(buckets.buckets);
  result->bucket_layers = std::move(buckets.bucket_layers);
  return absl::OkStatus();
}

namespace {

size_t EstimateFor(const ReformerConfig& config, absl::Span<const int64_t> lengths, uint32_t outputs,
                   const SessionOptions& options, ComputeType compute_type) {
  std::vector<int64_t> padded;
  std::vector<bool> padding_buckets;  // as RunDocuments sets them: internal padding added
  for (int64_t t0 : lengths) {
    padded.push_back(config.PaddedLength(t0));
    padding_buckets.push_back(padded.back() > t0);
  }
  const int64_t tile =
      std::max(kMinTileRows, TileRowsForBudget(config, options.workspace_budget_bytes, options.tile_rows));
  return PlanPeakBytes(config, padded, padding_buckets, outputs, tile, std::max(1, options.num_threads),
                       compute_type);
}

}  // namespace

size_t EstimatePeakWorkingBytes(const ReformerConfig& config, absl::Span<const int64_t> lengths,
                                uint32_t outputs, const SessionOptions& options) {
  return EstimateFor(config, lengths, outputs, options, ComputeType::kFloat32);
}

size_t EstimatePeakWorkingBytes(const ReformerModel& model, absl::Span<const int64_t> lengths, uint32_t outputs,
                                const SessionOptions& options) {
  return EstimateFor(model.config(), lengths, outputs, options, model.compute_type());
}

}  // namespace reformer
