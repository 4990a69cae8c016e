// The engine's public interface, as the server and the CLI use it.
//
//   auto model = ReformerModel::Load(dir, LoadOptions{});          // once, shared (immutable)
//   auto session = Session::Create(model, SessionOptions{...});    // one per worker thread
//   session->RunDocuments(docs, outputs, views);                    // ragged batch, per-document exact,
//                                                                   // written into caller memory
//
// Thread safety: ReformerModel is immutable after Load and may be shared by any number of threads.
// A Session is confined to the thread that created it (oneDNN primitives with the default
// scratchpad must run on the thread that created them); it owns its workspace arena.
// The engine starts no threads of its own (oneDNN's OpenMP team runs on the caller's thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/base/compute_type.h"
#include "engine/model/config.h"

namespace reformer {

class Tokenizer;
struct ModelWeights;
struct PackedModel;

// Which outputs to compute. Only what is asked is computed.
enum OutputFlags : uint32_t {
  kOutputLogits = 1u << 0,         // [T, V]
  kOutputHiddenStates = 1u << 1,   // [T, 2H], final LayerNorm output
  kOutputTokenLogprobs = 1u << 2,  // [T]: log p(x_t | x_<t) for t >= 1, 0 at t = 0 (causal models)
  kOutputEmbedding = 1u << 3,      // [2H]: mean of hidden states over the document's tokens
  kOutputAll = kOutputLogits | kOutputHiddenStates | kOutputTokenLogprobs | kOutputEmbedding,
};

struct LoadOptions {
  // Override the rotation seed when the directory has no rotations.safetensors
  // (else: config `hash_seed`, else kDefaultRotationSeed).
  std::optional<int64_t> rotation_seed;
  static constexpr int64_t kDefaultRotationSeed = 0;
  // Compute type of the dense matmuls (engine/base/compute_type.h, docs/isa.md): float32 (exact,
  // default), bfloat16, int8, or automatic (the fastest this CPU runs). Load fails with
  // FAILED_PRECONDITION naming the missing instruction set when the CPU cannot run the type.
  ComputeTypeRequest compute_type;
};

// Immutable loaded model: config, weights (mmap'd or converted to f32), LSH rotations,
// pre-packed matmul weights, optional tokenizer.
class ReformerModel {
 public:
  // Loads `dir`/config.json, `dir`/model.safetensors, optional `dir`/rotations.safetensors and a
  // tokenizer (`spiece.model`, or byte-level for vocab 258). Every error names the file and tensor.
  static absl::StatusOr<std::shared_ptr<const ReformerModel>> Load(const std::string& dir,
                                                                   const LoadOptions& options = {});
  // A model with random weights (N(0, 0.02²)-ish, LayerNorms at 1/0) and random rotations, built in
  // memory from `config` (benchmarks and tests). Deterministic in `seed`.
  static absl::StatusOr<std::shared_ptr<const ReformerModel>> CreateRandom(const ReformerConfig& config,
                                                                           uint64_t seed,
                                                                           const LoadOptions& options = {});
  ~ReformerModel();

  const ReformerConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  // nullptr when the model takes token ids only.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const ModelWeights& weights() const { return *weights_; }
  // Where the rotations came from: "rotations.safetensors" or "seed <n>".
  const std::string& rotations_source() const { return rotations_source_; }
  // Bytes of weights held (for logs/metrics), including the pre-packed matmul copies.
  size_t weight_bytes() const;
  // Matmul weights pre-packed for oneDNN at load (engine-internal).
  const PackedModel& packed() const { return *packed_; }
  // The compute type the matmul weights were packed in (never "auto").
  ComputeType compute_type() const { return compute_type_; }

 private:
  ReformerModel();
  // Validates the weights' shapes against the config and pre-packs them.
  static absl::StatusOr<std::shared_ptr<const ReformerModel>> Assemble(
      ReformerConfig config, std::unique_ptr<ModelWeights> weights, std::unique_ptr<Tokenizer> tokenizer,
      std::string dir, std::string rotations_source, ComputeType compute_type,
      std::unique_ptr<PackedModel> packed = nullptr);
  std::unique_ptr<PackedModel> packed_;
  ComputeType compute_type_ = ComputeType::kFloat32;
  ReformerConfig config_;
  std::string dir_;
  std::string rotations_source_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

// Returns true when the caller wants the forward to stop (cancelled or past deadline).
// Checked between layers and between attention blocks; cheap to call.
using CancelFn = std::function<bool()>;

struct SessionOptions {
  int num_threads = 1;                         // OpenMP threads this session's calls use
  // Bound on the working memory beyond the two residual streams, the per-document attention
  // buffers (one head's projections, the merged heads' output, O(T * head_size) LSH buffers):
  // it caps the largest token tile of the dense matmuls (RESOURCE_EXHAUSTED at Create if not even
  // a 128-row tile fits).
  size_t workspace_budget_bytes = 256u << 20;
  // The largest number of rows of a dense matmul call, a power of two in [128, 4096] (0 =
  // automatic: 4096, or less if the budget requires). Each document's rows run in calls of a
  // fixed size chosen from its own length (short documents in 128-row calls shared with other
  // short documents, long ones in tiles up to this size), which keeps a document's results bitwise
  // independent of its batch mates while small batches pay for a small tile only.
  int64_t tile_rows = 0;
};

// Where the engine writes one document's outputs: caller-owned memory, rows contiguous. Each
// pointer is null when that output is not requested. The engine writes every element of each
// requested output exactly once (token_logprobs[0] is written as 0) and reads none of them before
// writing, so the memory may be uninitialised (fresh pages, a file mapping); it never zero-fills.
struct OutputView {
  float* logits = nullptr;          // [num_tokens, V]
  float* hidden_states = nullptr;   // [num_tokens, 2H]
  float* token_logprobs = nullptr;  // [num_tokens] (index 0 written as 0)
  float* embedding = nullptr;       // [2H]
};

// Floats each output of a document of `num_tokens` tokens takes (what an OutputView must hold).
struct OutputSizes {
  int64_t logits = 0, hidden_states = 0, token_logprobs = 0, embedding = 0;
};
OutputSizes OutputSizesFor(const ReformerConfig& config, int64_t num_tokens);

// Bytes of the requested outputs of a batch of documents of `lengths` tokens (caller memory; not
// part of EstimatePeakWorkingBytes).
size_t EstimateOutputBytes(const ReformerConfig& config, absl::Span<const int64_t> lengths, uint32_t outputs);

// Outputs for one document, owned (the convenience form of RunDocuments, for tests and tools);
// vectors for outputs not requested stay empty.
struct DocumentOutput {
  int64_t num_tokens = 0;
  std::vector<float> logits;          // [num_tokens * V]
  std::vector<float> hidden_states;   // [num_tokens * 2H]
  std::vector<float> token_logprobs;  // [num_tokens]
  std::vector<float> embedding;       // [2H]
  // Sizes the requested vectors for `num_tokens` tokens and returns a view of them.
  OutputView Allocate(const ReformerConfig& config, int64_t num_tokens, uint32_t outputs);
};

// A padded batch in Hugging Face's semantics: ids [B, T] row-major, optional mask [B, T]
// (caller memory, read during the call only).
struct PaddedBatch {
  int64_t batch = 0;
  int64_t length = 0;
  absl::Span<const int32_t> input_ids;
  absl::Span<const uint8_t> attention_mask;  // empty = no mask
};

// Where RunPadded writes: caller memory for all B x T positions (padded positions included, as HF
// computes them); either pointer may be null when that output is not wanted.
struct PaddedOutputView {
  float* logits = nullptr;         // [B, T, V]
  float* hidden_states = nullptr;  // [B, T, 2H]
};

// LSH bucket keys of a padded batch (parity tests): per LSH layer that hashed,
// [B, nh, nH * T_padded].
struct PaddedBuckets {
  std::vector<std::vector<int32_t>> buckets;
  std::vector<int> bucket_layers;
};

// The owned form of RunPadded's outputs (tests and tools).
struct PaddedOutput {
  std::vector<float> logits;         // [B, T, V]
  std::vector<float> hidden_states;  // [B, T, 2H]
  // Per LSH layer that hashed: buckets [B, nh, nH * T_padded] (for parity tests).
  std::vector<std::vector<int32_t>> buckets;
  std::vector<int> bucket_layers;
};

// Work done by a session's last successful run (for tests, benchmarks and metrics).
struct RunStats {
  int64_t tokens = 0;           // padded tokens of the documents
  int64_t computed_rows = 0;    // rows the dense matmuls ran on (tokens + tile padding)
  double matmul_flops = 0;      // 2 x multiply-adds of the dense matmuls (projections, FFN, LM head)
};

class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Create(std::shared_ptr<const ReformerModel> model,
                                                         const SessionOptions& options);
  virtual ~Session() = default;

  // Ragged batch: each document is computed exactly as HF computes it alone (batch of one, no
  // padding); a document's outputs are bitwise independent of its batch mates. Dense matmuls run
  // over all documents' tokens concatenated. Each requested output of document d is written into
  // dst[d] (see OutputView; pointers of outputs not requested are ignored). Errors:
  // INVALID_ARGUMENT (empty doc, id out of range, too long, dst.size() != documents.size(), a
  // requested output's pointer null), CANCELLED when `cancel` returns true (the views then hold
  // partial results), RESOURCE_EXHAUSTED when over the workspace budget.
  virtual absl::Status RunDocuments(absl::Span<const absl::Span<const int32_t>> documents,
                                    uint32_t outputs, absl::Span<const OutputView> dst,
                                    const CancelFn& cancel = nullptr) = 0;
  // Convenience for tests and tools: allocates one DocumentOutput per document and runs into it.
  absl::Status RunDocuments(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                            std::vector<DocumentOutput>* results, const CancelFn& cancel = nullptr);

  // Padded batch in HF semantics (top-level fixture expectations), written into `dst`; with
  // `buckets` non-null, also the LSH bucket keys.
  virtual absl::Status RunPadded(const PaddedBatch& batch, const PaddedOutputView& dst,
                                 PaddedBuckets* buckets, const CancelFn& cancel = nullptr) = 0;
  // Convenience for tests and tools: owned logits, hidden states and buckets.
  absl::Status RunPadded(const PaddedBatch& batch, PaddedOutput* result, const CancelFn& cancel = nullptr);

  virtual const ReformerConfig& config() const = 0;
  // What the last successful RunDocuments/RunPadded computed.
  virtual RunStats last_run_stats() const = 0;

  // Workspace high-water mark (bytes) since creation or the last reset.
  virtual size_t workspace_high_water_bytes() const = 0;
  virtual void reset_workspace_high_water() = 0;

  // Between runs a session keeps the working memory of its last run (at most that run's
  // planned peak) so that the next run does not page-fault it in again; the next run first
  // trims it to its own plan. ReleaseWorkspace returns all of it to the OS (server workers call
  // it when they go idle). Returns the bytes released.
  virtual size_t ReleaseWorkspace() = 0;
  virtual size_t retained_workspace_bytes() const = 0;
};

// Estimated peak working bytes for running `lengths` as one ragged batch with `outputs`
// (the two residual streams, tiles, attention buffers; excluding the weights and the outputs
// themselves, which are caller memory: EstimateOutputBytes). The server uses it for admission;
// tests check it against the workspace high-water mark (±20 %).
size_t EstimatePeakWorkingBytes(const ReformerConfig& config, absl::Span<const int64_t> lengths,
                                uint32_t outputs, const SessionOptions& options);
// The same for a loaded model: also counts the activation conversion buffers of a bfloat16 or
// int8 model (engine/dnnl/matmul.h).
size_t EstimatePeakWorkingBytes(const ReformerModel& model, absl::Span<const int64_t> lengths,
                                uint32_t outputs, const SessionOptions& options);

// What the engine runs on in this process, for logs and model metadata, e.g.
// "kernels avx512, oneDNN avx512_core_bf16": the hand-written kernels' level
// (engine/base/cpu_features.h) and oneDNN's.
std::string EngineIsaSummary();

}  // namespace reformer
