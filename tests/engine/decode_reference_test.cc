// Cached decoding against a direct transcription of Hugging Face's cached generation
// (decode_reference.h) on random models of several shapes: prompts of one token, just under, at
// and over the LSH chunk length, at chunk boundaries, padded prompts (the padding-bucket offsets
// and HF's data-dependent increase_num_buckets test, both ways), the step that starts hashing,
// windows that wrap past the cached length, look-back of 2 chunks, local chunks that do not divide
// the LSH chunk, models without hash_seed, and a long prompt. Logits of every step within 1e-4.
#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/model/decoder.h"
#include "gtest/gtest.h"
#include "tests/engine/decode_reference.h"
#include "tests/engine/random_model.h"

namespace reformer {
namespace {

struct Shape {
  const char* name;
  const char* config;
  std::vector<int64_t> prompts;
  int64_t steps;
};

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> kShapes = {
      {"nh2_nb8_noseed",
       R"({"attn_layers": ["local", "lsh", "local", "lsh"], "hidden_size": 32, "num_attention_heads": 2,
           "attention_head_size": 16, "feed_forward_size": 64, "vocab_size": 50, "is_decoder": true,
           "lsh_attn_chunk_length": 16, "local_attn_chunk_length": 16, "num_hashes": 2, "num_buckets": 8,
           "axial_pos_shape": [16, 32], "axial_pos_embds_dim": [8, 24], "max_position_embeddings": 512})",
       {1, 2, 15, 16, 17, 31, 32, 33, 100, 301},
       40},
      {"nh3_factored_learned_seeded",
       R"({"attn_layers": ["lsh", "local", "lsh"], "hidden_size": 48, "num_attention_heads": 3,
           "attention_head_size": 16, "feed_forward_size": 96, "vocab_size": 40, "is_decoder": true,
           "hidden_act": "gelu_new", "lsh_attn_chunk_length": 32, "local_attn_chunk_length": 16, "num_hashes": 3,
           "num_buckets": [2, 4], "axial_pos_embds": false, "max_position_embeddings": 256, "hash_seed": 1357})",
       {1, 20, 31, 32, 33, 48, 64, 110},
       45},
      {"nh4_lookback2_lcm24",
       R"({"attn_layers": ["local", "lsh", "lsh", "local"], "hidden_size": 32, "num_attention_heads": 2,
           "attention_head_size": 24, "feed_forward_size": 64, "vocab_size": 20, "is_decoder": true,
           "lsh_attn_chunk_length": 8, "local_attn_chunk_length": 12, "lsh_num_chunks_before": 2,
           "local_num_chunks_before": 2, "num_hashes": 4, "num_buckets": 4, "axial_pos_shape": [8, 32],
           "axial_pos_embds_dim": [8, 24], "max_position_embeddings": 256})",
       {1, 7, 8, 9, 13, 25, 44, 150},
       50},
      {"nh1_nb64_padded",
       R"({"attn_layers": ["lsh", "local", "lsh"], "hidden_size": 48, "num_attention_heads": 3,
           "attention_head_size": 16, "feed_forward_size": 64, "vocab_size": 30, "is_decoder": true,
           "hidden_act": "gelu", "lsh_attn_chunk_length": 16, "local_attn_chunk_length": 32, "num_hashes": 2,
           "num_buckets": 64, "axial_pos_shape": [32, 32], "axial_pos_embds_dim": [16, 32],
           "max_position_embeddings": 1024})",
       {17, 40, 70, 200},
       30},
      {"long_prompt",
       R"({"attn_layers": ["local", "lsh"], "hidden_size": 32, "num_attention_heads": 2,
           "attention_head_size": 16, "feed_forward_size": 64, "vocab_size": 64, "is_decoder": true,
           "lsh_attn_chunk_length": 32, "local_attn_chunk_length": 64, "num_hashes": 2, "num_buckets": [4, 8],
           "axial_pos_shape": [64, 64], "axial_pos_embds_dim": [16, 16], "max_position_embeddings": 4096})",
       {3000},
       30},
  };
  return kShapes;
}

std::string TempDir(const std::string& name) {
  const char* b = std::getenv("REFORMER_BINARY_DIR");
  // One directory per process: the per-ISA copies of this test may run at once (ctest -j).
  return std::string(b ? b : "/tmp") + "/decode_reference_models_" + std::to_string(getpid()) + "/" + name;
}

TEST(DecodeReferenceTest, CachedStepsMatchHfSemantics) {
  int64_t padded_increase = 0, padded_no_increase = 0;
  for (const Shape& shape : Shapes()) {
    const std::string dir = TempDir(shape.name);
    ASSERT_EQ(testing::WriteRandomModel(dir, shape.config, 17), "");
    auto model = ReformerModel::Load(dir);
    std::filesystem::remove_all(std::filesystem::path(dir).parent_path());  // loaded: the files are not needed
    ASSERT_TRUE(model.ok()) << model.status();
    const int64_t V = (*model)->config().vocab_size;
    auto decoder = Decoder::Create(*model, DecoderOptions{2});
    ASSERT_TRUE(decoder.ok());
    std::mt19937 rng(5);
    for (int64_t t0 : shape.prompts) {
      std::vector<int32_t> prompt(t0);
      for (auto& x : prompt) x = static_cast<int32_t>(1 + rng() % (V - 1));
      testing::ReferenceDecoder ref(*model);
      std::vector<float> want = ref.Prefill(prompt), got(V);
      auto seq = DecodeState::Create(**model, prompt, shape.steps + 1, DecodeMode::kCached);
      ASSERT_TRUE(seq.ok()) << seq.status();
      DecodeState* s = seq->get();
      float* dst = got.data();
      ASSERT_TRUE((*decoder)->Prefill({&s, 1}, {&dst, 1}).ok());
      float worst = 0, scale = 0;
      int64_t worst_step = -1;
      for (int64_t step = 0; step <= shape.steps; ++step) {
        for (int64_t j = 0; j < V; ++j) {
          scale = std::max(scale, std::abs(want[j]));
          if (std::abs(got[j] - want[j]) > worst) {
            worst = std::abs(got[j] - want[j]);
            worst_step = step;
          }
        }
        if (step == shape.steps) break;
        const int32_t tok = static_cast<int32_t>(1 + rng() % (V - 1));
        ASSERT_TRUE((*decoder)->Step({&s, 1}, {&tok, 1}, {&dst, 1}).ok());
        want = ref.Step(tok);
      }
      std::printf("[%s prompt %lld] %lld steps: max |dlogits| %.3g (step %lld) of |logits| <= %.3g, "
                  "min bucket margin %.2g\n",
                  shape.name, static_cast<long long>(t0), static_cast<long long>(shape.steps), worst,
                  static_cast<long long>(worst_step), scale, ref.min_margin());
      ASSERT_GT(ref.min_margin(), 1e-4) << "a bucket decision within rounding of a tie: pick another seed";
      EXPECT_LE(worst, 1e-4f) << shape.name << " prompt " << t0 << " step " << worst_step;
      padded_increase += ref.padded_increase_steps();
      padded_no_increase += ref.padded_no_increase_steps();
    }
  }
  std::printf("padded prompts: %lld steps with increase_num_buckets, %lld without\n",
              static_cast<long long>(padded_increase), static_cast<long long>(padded_no_increase));
  EXPECT_GT(padded_increase, 0);
  EXPECT_GT(padded_no_increase, 0);
}

}  // namespace
}  // namespace reformer
