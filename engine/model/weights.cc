#include "engine/model/weights.h"

#include <cstring>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/logging.h"
#include "engine/base/status_macros.h"
#include "engine/model/rotations.h"
#include "engine/weights/safetensors.h"

namespace reformer {
namespace {

// Tensors that pre-4.31 checkpoints stored as persistent buffers; ignored (engine-numerics §2.3).
bool IsLegacyBuffer(const std::string& name) {
  return absl::EndsWith(name, "self_mask_value_float16") ||
         absl::EndsWith(name, "self_mask_value_float32") ||
         absl::EndsWith(name, "mask_value_float16") || absl::EndsWith(name, "mask_value_float32");
}

class Binder {
 public:
  Binder(const SafetensorsFile& file, ModelWeights* w) : file_(file), w_(w) {}

  absl::Status Bind(const std::string& name, std::vector<int64_t> shape, WeightView* out) {
    std::shared_ptr<const void> keep;
    ASSIGN_OR_RETURN(const float* data, file_.ReadF32(name, shape, &keep));
    out->data = data;
    out->shape = std::move(shape);
    if (keep != file_.owner()) {
      w_->storage.push_back(std::move(keep));
    } else if (!holds_file_) {
      w_->storage.push_back(std::move(keep));
      holds_file_ = true;
    }
    w_->total_bytes += static_cast<size_t>(out->numel()) * sizeof(float);
    used_.insert(name);
    return absl::OkStatus();
  }
  void MarkUsed(const std::string& name) { used_.insert(name); }
  const std::set<std::string>& used() const { return used_; }

 private:
  const SafetensorsFile& file_;
  ModelWeights* w_;
  bool holds_file_ = false;
  std::set<std::string> used_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const ReformerConfig& c,
                                                                 const std::string& model_path,
                                                                 const std::string& rotations_path,
                                                                 int64_t seed) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(model_path));
  auto w = std::make_unique<ModelWeights>();
  Binder b(*file, w.get());
  const int64_t H = c.hidden_size, A = c.all_head_size(), F = c.feed_forward_size, V = c.vocab_size;
  const std::string p = "reformer.";

  RETURN_IF_ERROR(b.Bind(p + "embeddings.word_embeddings.weight", {V, H}, &w->word_embeddings));
  if (c.axial_pos_embds) {
    const int64_t a0 = c.axial_pos_shape[0], a1 = c.axial_pos_shape[1];
    const int64_t d0 = c.axial_pos_embds_dim[0], d1 = c.axial_pos_embds_dim[1];
    RETURN_IF_ERROR(b.Bind(p + "embeddings.position_embeddings.weights.0", {a0, 1, d0}, &w->axial_pos0));
    RETURN_IF_ERROR(b.Bind(p + "embeddings.position_embeddings.weights.1", {1, a1, d1}, &w->axial_pos1));
  } else {
    RETURN_IF_ERROR(b.Bind(p + "embeddings.position_embeddings.embedding.weight",
                           {c.max_position_embeddings, H}, &w->position_embeddings));
  }

  w->layers.resize(c.attn_layers.size());
  for (size_t i = 0; i < c.attn_layers.size(); ++i) {
    LayerWeights& L = w->layers[i];
    L.type = c.attn_layers[i];
    const std::string lp = absl::StrCat(p, "encoder.layers.", i, ".");
    RETURN_IF_ERROR(b.Bind(lp + "attention.layer_norm.weight", {H}, &L.attn_ln_weight));
    RETURN_IF_ERROR(b.Bind(lp + "attention.layer_norm.bias", {H}, &L.attn_ln_bias));
    const std::string sp = lp + "attention.self_attention.";
    if (L.type == AttnType::kLsh) {
      RETURN_IF_ERROR(b.Bind(sp + "query_key.weight", {A, H}, &L.query_key));
    } else {
      RETURN_IF_ERROR(b.Bind(sp + "query.weight", {A, H}, &L.query));
      RETURN_IF_ERROR(b.Bind(sp + "key.weight", {A, H}, &L.key));
    }
    RETURN_IF_ERROR(b.Bind(sp + "value.weight", {A, H}, &L.value));
    RETURN_IF_ERROR(b.Bind(lp + "attention.output.dense.weight", {H, A}, &L.attn_out));
    RETURN_IF_ERROR(b.Bind(lp + "feed_forward.layer_norm.weight", {H}, &L.ff_ln_weight));
    RETURN_IF_ERROR(b.Bind(lp + "feed_forward.layer_norm.bias", {H}, &L.ff_ln_bias));
    RETURN_IF_ERROR(b.Bind(lp + "feed_forward.dense.dense.weight", {F, H}, &L.ff_in_weight));
    RETURN_IF_ERROR(b.Bind(lp + "feed_forward.dense.dense.bias", {F}, &L.ff_in_bias));
    RETURN_IF_ERROR(b.Bind(lp + "feed_forward.output.dense.weight", {H, F}, &L.ff_out_weight));
    RETURN_IF_ERROR(b.Bind(lp + "feed_forward.output.dense.bias", {H}, &L.ff_out_bias));
  }
  RETURN_IF_ERROR(b.Bind(p + "encoder.layer_norm.weight", {2 * H}, &w->final_ln_weight));
  RETURN_IF_ERROR(b.Bind(p + "encoder.layer_norm.bias", {2 * H}, &w->final_ln_bias));
  RETURN_IF_ERROR(b.Bind("lm_head.decoder.weight", {V, 2 * H}, &w->lm_weight));
  // The LM bias is one tensor in HF, saved under either name (or both).
  if (file->Has("lm_head.decoder.bias")) {
    RETURN_IF_ERROR(b.Bind("lm_head.decoder.bias", {V}, &w->lm_bias));
    if (file->Has("lm_head.bias")) {
      WeightView other;
      RETURN_IF_ERROR(b.Bind("lm_head.bias", {V}, &other));
      if (std::memcmp(other.data, w->lm_bias.data, sizeof(float) * V) != 0) {
        LOG_WARNING(model_path, ": lm_head.bias and lm_head.decoder.bias differ; using lm_head.decoder.bias");
      }
    }
  } else if (file->Has("lm_head.bias")) {
    RETURN_IF_ERROR(b.Bind("lm_head.bias", {V}, &w->lm_bias));
  } else {
    return absl::NotFoundError(absl::StrCat(model_path, ": missing tensor 'lm_head.decoder.bias' (or 'lm_head.bias'), expected shape [", V, "]"));
  }

  std::vector<std::string> unexpected;
  for (const auto& name : file->Names()) {
    if (!b.used().count(name) && !IsLegacyBuffer(name)) unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    LOG_WARNING(model_path, ": ignoring ", unexpected.size(), " unexpected tensor(s): ",
                absl::StrJoin(unexpected.begin(), unexpected.begin() + std::min<size_t>(unexpected.size(), 8), ", "),
                unexpected.size() > 8 ? ", ..." : "");
  }

  // LSH rotations [nh, dh, nH, rs/2] for every LSH layer that can hash at the model's context.
  const bool can_hash = c.context_length() > c.lsh_attn_chunk_length;
  const std::vector<int64_t> rshape = {c.num_attention_heads, c.attention_head_size, c.num_hashes,
                                       c.rotation_size() / 2};
  if (c.has_lsh() && can_hash) {
    if (!rotations_path.empty()) {
      ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> rot, SafetensorsFile::Open(rotations_path));
      Binder rb(*rot, w.get());
      for (size_t i = 0; i < c.attn_layers.size(); ++i) {
        if (c.attn_layers[i] != AttnType::kLsh) continue;
        const std::string name = absl::StrCat("encoder.layers.", i, ".lsh_rotations");
        absl::Status st = rb.Bind(name, rshape, &w->layers[i].rotations);
        if (!st.ok()) {
          if (c.num_buckets_auto && absl::IsInvalidArgument(st)) {
            return absl::InvalidArgumentError(absl::StrCat(
                st.message(), " — num_buckets is null in the config and was resolved from "
                "max_position_embeddings=", c.max_position_embeddings, " to [",
                absl::StrJoin(c.num_buckets, ", "), "]; set num_buckets explicitly to match the rotations"));
          }
          return st;
        }
      }
    } else {
      // Same draws as HF (see rotations.h); hash_seed reseeds before every layer.
      TorchLikeNormalGenerator gen(static_cast<uint64_t>(c.hash_seed.value_or(seed)));
      int64_t n = 1;
      for (int64_t d : rshape) n *= d;
      for (size_t i = 0; i < c.attn_layers.size(); ++i) {
        if (c.attn_layers[i] != AttnType::kLsh) continue;
        if (c.hash_seed.has_value()) gen = TorchLikeNormalGenerator(static_cast<uint64_t>(*c.hash_seed));
        auto buf = std::make_shared<std::vector<float>>(gen.Randn(n));
        w->layers[i].rotations.data = buf->data();
        w->layers[i].rotations.shape = rshape;
        w->total_bytes += buf->size() * sizeof(float);
        w->storage.push_back(std::move(buf));
      }
    }
  }
  return w;
}

}  // namespace reformer
