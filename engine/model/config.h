// ReformerConfig: the fields of a Hugging Face `config.json` that matter for inference
// (engine-numerics §1), with HF's defaults, parsed and validated once at load.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace reformer {

enum class AttnType { kLocal, kLsh };
enum class Activation { kRelu, kGelu, kGeluNew, kSilu, kTanh, kSigmoid, kGeluFast, kQuickGelu, kMish, kLinear };

const char* AttnTypeName(AttnType t);
const char* ActivationName(Activation a);

// Bounds on the config fields that size memory or a loop, checked at load (Validate) so that no
// later product overflows, no 32-bit position or bucket key wraps, and no load- or run-time
// allocation is sized by an absurd value. Far above the published checkpoints (crime-and-punishment:
// 524,288 positions, chunk 64, 1 hash; enwik8: H 1024, 8 heads x 128, chunk 256, 4 hashes).
struct ConfigLimits {
  static constexpr int64_t kLayers = 1024;
  static constexpr int64_t kHiddenSize = 65536;
  static constexpr int64_t kHeads = 1024;
  static constexpr int64_t kHeadSize = 4096;
  static constexpr int64_t kAllHeadSize = int64_t{1} << 20;       // heads x head size
  static constexpr int64_t kFeedForward = int64_t{1} << 20;
  static constexpr int64_t kVocab = int64_t{1} << 24;
  static constexpr int64_t kPositions = int64_t{1} << 24;         // max_position_embeddings, axial factors
  static constexpr int64_t kChunksAround = 1024;                  // num_chunks_before / after
  static constexpr int64_t kAttentionBlock = int64_t{1} << 26;    // chunk^2 x (1 + before + after) scores
  static constexpr int64_t kNumHashes = 1024;
  static constexpr int64_t kBucketFactors = 8;                    // entries of a num_buckets list
  static constexpr int64_t kBuckets = int64_t{1} << 24;           // product of the factors
  static constexpr int64_t kHashWidth = int64_t{1} << 20;         // num_hashes x rotation_size / 2
  static constexpr int64_t kRotations = int64_t{1} << 28;         // heads x head size x hash width
  static constexpr int64_t kInt32 = (int64_t{1} << 31) - 1;       // num_hashes x positions, x buckets
};

struct ReformerConfig {
  // One entry per layer (after the num_hidden_layers override has been applied).
  std::vector<AttnType> attn_layers;
  int64_t hidden_size = 256;
  int64_t num_attention_heads = 12;
  int64_t attention_head_size = 64;
  int64_t feed_forward_size = 512;
  int64_t vocab_size = 320;
  Activation hidden_act = Activation::kRelu;
  std::string hidden_act_name = "relu";
  bool is_decoder = false;
  float layer_norm_eps = 1e-12f;
  bool axial_pos_embds = true;
  std::vector<int64_t> axial_pos_shape = {64, 64};
  std::vector<int64_t> axial_pos_embds_dim = {64, 192};
  int64_t max_position_embeddings = 4096;
  int64_t lsh_attn_chunk_length = 64;
  int64_t local_attn_chunk_length = 64;
  int64_t lsh_num_chunks_before = 1;
  int64_t lsh_num_chunks_after = 0;
  int64_t local_num_chunks_before = 1;
  int64_t local_num_chunks_after = 0;
  int64_t num_hashes = 1;
  // Bucket factors: one element for an int `num_buckets`, several for a factorised list.
  // When config.json says null, this is resolved at load (engine-numerics §1.3 rule applied to
  // max_position_embeddings) and `num_buckets_auto` is true.
  std::vector<int64_t> num_buckets;
  bool num_buckets_auto = false;
  std::optional<int64_t> hash_seed;
  int64_t chunk_size_feed_forward = 0;
  int64_t chunk_size_lm_head = 0;
  int64_t pad_token_id = 0;
  // `eos_token_id` (an int or a list): ids that end a generated sequence (docs/generation.md);
  // empty = generation stops only on length or stop strings. No effect on the forward.
  std::vector<int64_t> eos_token_ids;
  bool tie_word_embeddings = false;
  // Architecture string from config.json "architectures"[0], if any (informational).
  std::string architecture;

  int64_t num_layers() const { return static_cast<int64_t>(attn_layers.size()); }
  int64_t all_head_size() const { return num_attention_heads * attention_head_size; }
  bool has_lsh() const;
  bool has_local() const;
  // Total bucket count (product of factors) and rotation width (sum of factors, or nb for an int).
  int64_t total_buckets() const;
  int64_t rotation_size() const;
  // lcm / min over the chunk lengths in use (engine-numerics §4.1).
  int64_t chunk_lcm() const;
  int64_t chunk_min() const;
  // Longest document the model accepts, counted after internal padding: max_position_embeddings,
  // and with axial embeddings at most a0*a1 (HF checks both).
  int64_t context_length() const;
  // Length after the engine's internal padding for a document of `t0` tokens
  // (engine-numerics §4.1).
  int64_t PaddedLength(int64_t t0) const;

  // Parses config.json text. `source` (the file path) is named in every error.
  static absl::StatusOr<ReformerConfig> FromJson(absl::string_view json_text, absl::string_view source);
  static absl::StatusOr<ReformerConfig> FromFile(const std::string& path);

  // HF's rule (engine-numerics §1.3) for num_buckets = null, applied to a padded length.
  static std::vector<int64_t> AutoNumBuckets(int64_t padded_length, int64_t lsh_chunk_length,
                                             int64_t max_position_embeddings);

  // Checks internal consistency (chunk settings, axial shapes, tie_word_embeddings, ...) and the
  // bounds of ConfigLimits; every message names the field and the bound.
  absl::Status Validate(absl::string_view source) const;

  // A one-line human summary for logs.
  std::string Summary() const;

 private:
  absl::Status ValidateBounds(absl::string_view source) const;
};

}  // namespace reformer
