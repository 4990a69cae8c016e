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

  absl::Status RunDocuments(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                            std::vector<DocumentOutput>* results, const CancelFn& cancel) override {
    omp_set_num_threads(options_.num_threads);
    const ReformerConfig& c = model_->config();
    if (documents.empty()) return absl::InvalidArgumentError("no documents");
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
      total += padded[d];
    }
    WsBuffer<int32_t> ids(&ws_, total);
    WsBuffer<uint8_t> masks(&ws_, total);
    std::vector<ForwardDoc> docs(documents.size());
    int64_t off = 0;
    for (size_t d = 0; d < documents.size(); ++d) {
      const int64_t t0 = static_cast<int64_t>(documents[d].size());
      std::copy(documents[d].begin(), documents[d].end(), ids.data() + off);
      std::fill(ids.data() + off + t0, ids.data() + off + padded[d], static_cast<int32_t>(c.pad_token_id));
      std::fill(masks.data() + off, masks.data() + off + t0, uint8_t{1});
      ForwardDoc& fd = docs[d];
      fd.ids = ids.data() + off;
      fd.padded_length = padded[d];
      fd.output_length = t0;
      // A document alone has a mask only when internal padding was added (SPEC §3).
      fd.mask = padded[d] > t0 ? masks.data() + off : nullptr;
      fd.padding_bucket = padded[d] > t0;
      off += padded[d];
    }
    ForwardOptions fo;
    fo.outputs = outputs;
    fo.cancel = &cancel;
    ForwardOutputs out;
    RETURN_IF_ERROR(RunForward(*model_, ctx_.get(), &ws_, tile_rows_, docs, fo, &out));
    *results = std::move(out.docs);
    return absl::OkStatus();
  }

  absl::Status RunPadded(const PaddedBatch& batch, PaddedOutput* result, const CancelFn& cancel) override {
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
    WsBuffer<int32_t> ids(&ws_, B * T);
    WsBuffer<uint8_t> masks(&ws_, B * T);
    bool any_pad = false;
    std::vector<ForwardDoc> docs(B);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        ids[b * T + t] = t < T0 ? batch.input_ids[b * T0 + t] : static_cast<int32_t>(c.pad_token_id);
        masks[b * T + t] = t < T0 ? (has_mask ? (batch.attention_mask[b * T0 + t] != 0) : 1) : 0;
        any_pad |= masks[b * T + t] == 0;
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      docs[b].ids = ids.data() + b * T;
      docs[b].mask = mask_exists ? masks.data() + b * T : nullptr;
      docs[b].padded_length = T;
      docs[b].output_length = T0;
      docs[b].padding_bucket = any_pad;  // SPEC §7.3: "mask has padding" anywhere in the batch
    }
    ForwardOptions fo;
    fo.outputs = kOutputLogits | kOutputHiddenStates;
    fo.want_buckets = true;
    fo.cancel = &cancel;
    ForwardOutputs out;
    RETURN_IF_ERROR(RunForward(*model_, ctx_.get(), &ws_, tile_rows_, docs, fo, &out));
    const int64_t V = c.vocab_size, H2 = 2 * c.hidden_size;
    result->logits.resize(B * T0 * V);
    result->hidden_states.resize(B * T0 * H2);
    for (int64_t b = 0; b < B; ++b) {
      std::copy(out.docs[b].logits.begin(), out.docs[b].logits.end(), result->logits.begin() + b * T0 * V);
      std::copy(out.docs[b].hidden_states.begin(), out.docs[b].hidden_states.end(),
                result->hidden_states.begin() + b * T0 * H2);
    }
    result->bucket_layers = out.bucket_layers;
    result->buckets.clear();
    for (auto& per_doc : out.buckets) {
      std::vector<int32_t> all;
      for (auto& v : per_doc) all.insert(all.end(), v.begin(), v.end());
      result->buckets.push_back(std::move(all));
    }
    return absl::OkStatus();
  }

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

  std::shared_ptr<const ReformerModel> model_;
  SessionOptions options_;
  std::unique_ptr<DnnlContext> ctx_;
  int64_t tile_rows_;
  Workspace ws_;
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
                                                     " bytes is below one 256-token tile for this model"));
  ASSIGN_OR_RETURN(std::unique_ptr<DnnlContext> ctx, DnnlContext::Create());
  return std::unique_ptr<Session>(new SessionImpl(std::move(model), options, std::move(ctx), tile));
}

size_t EstimatePeakWorkingBytes(const ReformerConfig& config, absl::Span<const int64_t> lengths,
                                uint32_t outputs, const SessionOptions& options) {
  std::vector<int64_t> padded, out_len;
  for (int64_t t0 : lengths) {
    padded.push_back(config.PaddedLength(t0));
    out_len.push_back(t0);
  }
  const int64_t tile = std::max<int64_t>(256, TileRowsForBudget(config, options.workspace_budget_bytes, options.tile_rows));
  return PlanPeakBytes(config, padded, out_len, outputs, tile, std::max(1, options.num_threads));
}

size_t EstimatePeakWorkingBytes(const ReformerModel& model, absl::Span<const int64_t> lengths, uint32_t outputs,
                                const SessionOptions& options) {
  const ReformerConfig& config = model.config();
  std::vector<int64_t> padded, out_len;
  for (int64_t t0 : lengths) {
    padded.push_back(config.PaddedLength(t0));
    out_len.push_back(t0);
  }
  const int64_t tile = std::max<int64_t>(256, TileRowsForBudget(config, options.workspace_budget_bytes, options.tile_rows));
  return PlanPeakBytes(config, padded, out_len, outputs, tile, std::max(1, options.num_threads), model.compute_type());
}

}  // namespace reformer
