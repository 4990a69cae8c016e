// ReformerModel: load (config → weights → tokenizer → pre-packed matmul weights) and the
// in-memory random model used by benchmarks.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/base/cpu_features.h"
#include "engine/base/logging.h"
#include "engine/dnnl/matmul.h"
#include "engine/base/status_macros.h"
#include "engine/model/engine_api.h"
#include "engine/model/forward.h"
#include "engine/model/tokenizer.h"
#include "engine/model/weights.h"

namespace reformer {

namespace {

// After packing, the unpacked matmul weights are never read again. Give their memory back: the
// whole pages inside each tensor (never a page shared with anything else) are dropped with
// MADV_DONTNEED (an mmap'd file's pages are re-read from the file on a later touch, an anonymous
// buffer's come back as zeros), and the views are cleared so nothing reads them. Without this a
// loaded f32 model stays resident twice (mapping + packed copy).
void ReleaseUnpackedMatmulWeights(ModelWeights* w) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  auto release = [&](WeightView* v) {
    if (v->data == nullptr) return;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(v->data);
    const uintptr_t end = begin + static_cast<uintptr_t>(v->numel()) * sizeof(float);
    const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
    const size_t bytes = static_cast<size_t>(v->numel()) * sizeof(float);
    w->total_bytes -= std::min(w->total_bytes, bytes);
    v->data = nullptr;
  };
  for (LayerWeights& L : w->layers)
    for (WeightView* v : {&L.query_key, &L.query, &L.key, &L.value, &L.attn_out, &L.ff_in_weight, &L.ff_out_weight})
      release(v);
  release(&w->lm_weight);
}

// The compute type for `request` on this CPU and oneDNN (docs/isa.md); auto takes the first of
// int8, bfloat16 that both support (the faster first, docs/results/engine-perf2.md), else float32.
absl::StatusOr<ComputeType> ResolveComputeType(const ComputeTypeRequest& request) {
  if (!request.automatic) {
    RETURN_IF_ERROR(CpuSupports(HostCpu(), request.type));
    RETURN_IF_ERROR(DnnlSupports(request.type));
    return request.type;
  }
  for (ComputeType t : {ComputeType::kInt8, ComputeType::kBFloat16}) {
    const absl::Status cpu = CpuSupports(HostCpu(), t), dnnl = DnnlSupports(t);
    if (cpu.ok() && dnnl.ok()) {
      LOG_INFO("compute type auto: ", ComputeTypeName(t), " (", EngineIsaSummary(), ")");
      return t;
    }
    LOG_INFO("compute type auto: not ", ComputeTypeName(t), ": ", cpu.ok() ? dnnl.message() : cpu.message());
  }
  LOG_INFO("compute type auto: float32");
  return ComputeType::kFloat32;
}

}  // namespace

std::string EngineIsaSummary() {
  return absl::StrCat("kernels ", IsaName(SelectedIsa()), ", oneDNN ", DnnlCpuIsaName());
}

ReformerModel::ReformerModel() = default;
ReformerModel::~ReformerModel() = default;

size_t ReformerModel::weight_bytes() const {
  return weights_->total_bytes + (packed_ ? packed_->bytes : 0);
}

absl::StatusOr<std::shared_ptr<const ReformerModel>> ReformerModel::Assemble(
    ReformerConfig config, std::unique_ptr<ModelWeights> weights, std::unique_ptr<Tokenizer> tokenizer,
    std::string dir, std::string rotations_source, ComputeType compute_type, std::unique_ptr<PackedModel> packed) {
  if (static_cast<int64_t>(weights->layers.size()) != config.num_layers())
    return absl::InternalError("weights and config disagree on the layer count");
  std::shared_ptr<ReformerModel> model(new ReformerModel());
  if (!packed) {
    packed = std::make_unique<PackedModel>(PackedModel::Build(config, *weights, compute_type));
    ReleaseUnpackedMatmulWeights(weights.get());
  }
  model->packed_ = std::move(packed);
  model->compute_type_ = compute_type;
  model->config_ = std::move(config);
  model->weights_ = std::move(weights);
  model->tokenizer_ = std::move(tokenizer);
  model->dir_ = std::move(dir);
  model->rotations_source_ = std::move(rotations_source);
  return std::shared_ptr<const ReformerModel>(std::move(model));
}

absl::StatusOr<std::shared_ptr<const ReformerModel>> ReformerModel::Load(const std::string& dir,
                                                                         const LoadOptions& options) {
  RETURN_IF_ERROR(IsaStatus());  // e.g. an invalid REFORMER_MAX_ISA
  ASSIGN_OR_RETURN(const ComputeType compute_type, ResolveComputeType(options.compute_type));
  const std::filesystem::path root(dir);
  ASSIGN_OR_RETURN(ReformerConfig config, ReformerConfig::FromFile((root / "config.json").string()));
  const std::string rot_path = (root / "rotations.safetensors").string();
  std::error_code ec;
  const bool has_rot = std::filesystem::exists(rot_path, ec);
  const int64_t seed = options.rotation_seed.value_or(
      config.hash_seed.value_or(LoadOptions::kDefaultRotationSeed));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> weights,
                   ModelWeights::Load(config, (root / "model.safetensors").string(),
                                      has_rot ? rot_path : std::string(), seed));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::ForModelDir(dir, config));
  std::string source = has_rot ? std::string("rotations.safetensors") : absl::StrCat("seed ", seed);
  LOG_INFO("loaded model ", dir, ": ", config.Summary(), "; rotations from ", source, "; compute type ",
           ComputeTypeName(compute_type), " (", EngineIsaSummary(), ")");
  return Assemble(std::move(config), std::move(weights), std::move(tokenizer), dir, std::move(source),
                  compute_type);
}

absl::StatusOr<std::shared_ptr<const ReformerModel>> ReformerModel::CreateRandom(
    const ReformerConfig& config, uint64_t seed, const LoadOptions& options) {
  RETURN_IF_ERROR(IsaStatus());
  ASSIGN_OR_RETURN(const ComputeType compute_type, ResolveComputeType(options.compute_type));
  RETURN_IF_ERROR(config.Validate("<random model>"));
  auto w = std::make_unique<ModelWeights>();
  std::mt19937_64 rng(seed);
  // Matmul weights are only read by PackedModel::Build: they live in `transient` and are
  // released once packed, so the random model holds one copy (as a real model's RSS should).
  std::vector<std::shared_ptr<const void>> transient;
  bool to_transient = false;
  auto make = [&](std::vector<int64_t> shape, float stddev, float constant) {
    WeightView v;
    v.shape = std::move(shape);
    auto buf = std::make_shared<std::vector<float>>(v.numel());
    if (stddev > 0) {
      // Cheap uniform with the requested standard deviation (benchmarks need size, not quality).
      std::uniform_real_distribution<float> u(-stddev * 1.7320508f, stddev * 1.7320508f);
      for (float& x : *buf) x = u(rng);
    } else {
      std::fill(buf->begin(), buf->end(), constant);
    }
    v.data = buf->data();
    if (to_transient) {
      transient.push_back(std::move(buf));
    } else {
      w->total_bytes += buf->size() * sizeof(float);
      w->storage.push_back(std::move(buf));
    }
    return v;
  };
  auto make_matmul = [&](std::vector<int64_t> shape) {
    to_transient = true;
    WeightView v = make(std::move(shape), 0.02f, 0);
    to_transient = false;
    return v;
  };
  const int64_t H = config.hidden_size, A = config.all_head_size(), F = config.feed_forward_size;
  const int64_t V = config.vocab_size;
  const float s = 0.02f;
  w->word_embeddings = make({V, H}, s, 0);
  if (config.axial_pos_embds) {
    w->axial_pos0 = make({config.axial_pos_shape[0], 1, config.axial_pos_embds_dim[0]}, s, 0);
    w->axial_pos1 = make({1, config.axial_pos_shape[1], config.axial_pos_embds_dim[1]}, s, 0);
  } else {
    w->position_embeddings = make({config.max_position_embeddings, H}, s, 0);
  }
  // Pack each layer as soon as it is drawn, then drop its unpacked matmul weights (their views
  // are cleared: only the packed copies are read by the forward), so the random model never
  // holds two copies of more than one layer.
  auto packed = std::make_unique<PackedModel>();
  for (AttnType type : config.attn_layers) {
    LayerWeights L;
    L.type = type;
    L.attn_ln_weight = make({H}, 0, 1.f);
    L.attn_ln_bias = make({H}, 0, 0.f);
    if (type == AttnType::kLsh) {
      L.query_key = make_matmul({A, H});
      L.rotations = make({config.num_attention_heads, config.attention_head_size, config.num_hashes,
                          config.rotation_size() / 2},
                         1.f, 0);
    } else {
      L.query = make_matmul({A, H});
      L.key = make_matmul({A, H});
    }
    L.value = make_matmul({A, H});
    L.attn_out = make_matmul({H, A});
    L.ff_ln_weight = make({H}, 0, 1.f);
    L.ff_ln_bias = make({H}, 0, 0.f);
    L.ff_in_weight = make_matmul({F, H});
    L.ff_in_bias = make({F}, s, 0);
    L.ff_out_weight = make_matmul({H, F});
    L.ff_out_bias = make({H}, s, 0);
    packed->Add(PackedModel::PackLayer(config, L, type, compute_type));
    transient.clear();
    for (WeightView* v : {&L.query_key, &L.query, &L.key, &L.value, &L.attn_out, &L.ff_in_weight, &L.ff_out_weight})
      v->data = nullptr;
    w->layers.push_back(std::move(L));
  }
  w->final_ln_weight = make({2 * H}, 0, 1.f);
  w->final_ln_bias = make({2 * H}, 0, 0.f);
  w->lm_weight = make_matmul({V, 2 * H});
  w->lm_bias = make({V}, s, 0);
  packed->SetLmHead(config, w->lm_weight.data);
  transient.clear();
  w->lm_weight.data = nullptr;
  return Assemble(config, std::move(w), nullptr, "", absl::StrCat("random seed ", seed), compute_type,
                  std::move(packed));
}

}  // namespace reformer
