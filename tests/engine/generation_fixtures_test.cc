// Greedy generation against Hugging Face v4.40.2's own outputs (tests/fixtures/generation/): in
// cached mode against generate(use_cache=True), in recompute mode against use_cache=False. Tokens
// must match exactly (including the stop on EOS) and every step's logits within 1e-4.
#include <cmath>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/model/decoder.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/fixture_util.h"

namespace reformer {
namespace {

constexpr float kTol = 1e-4f;

std::string GenRoot() { return testing::FixtureRoot() + "/generation"; }

const std::vector<std::string>& GenFixtures() {
  static const std::vector<std::string> kNames = {"gen_a_short_prompt_crosses_lsh_chunk",
                                                  "gen_b_enwik8_pattern_12layer_nh1",
                                                  "gen_c_eos_stop_4hash_lookback2"};
  return kNames;
}

int32_t Argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct GenRun {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // per step
};

// Greedy decoding as HF's generate: argmax of each step's logits, stop on EOS or max_new_tokens.
GenRun Greedy(std::shared_ptr<const ReformerModel> model, const std::vector<int32_t>& prompt, int64_t max_new,
           DecodeMode mode) {
  GenRun r;
  auto decoder = Decoder::Create(model, DecoderOptions{2});
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  auto seq = DecodeState::Create(*model, prompt, max_new, mode);
  EXPECT_TRUE(seq.ok()) << seq.status();
  if (!decoder.ok() || !seq.ok()) return r;
  const int64_t V = model->config().vocab_size;
  std::vector<float> logits(V);
  DecodeState* s = seq->get();
  float* dst = logits.data();
  absl::Status st = (*decoder)->Prefill({&s, 1}, {&dst, 1});
  EXPECT_TRUE(st.ok()) << st;
  const auto& eos = model->config().eos_token_ids;
  while (st.ok()) {
    r.logits.push_back(logits);
    const int32_t tok = Argmax(logits);
    r.tokens.push_back(tok);
    if (std::find(eos.begin(), eos.end(), tok) != eos.end()) break;
    if (static_cast<int64_t>(r.tokens.size()) == max_new) break;
    st = (*decoder)->Step({&s, 1}, {&tok, 1}, {&dst, 1});
    EXPECT_TRUE(st.ok()) << st;
  }
  return r;
}

class GenerationFixtureTest : public ::testing::TestWithParam<std::tuple<std::string, DecodeMode>> {};

TEST_P(GenerationFixtureTest, MatchesHuggingFace) {
  const auto& [name, mode] = GetParam();
  const std::string dir = GenRoot() + "/" + name;
  auto model = ReformerModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const testing::FixtureInputs in = testing::ReadInputs(dir + "/inputs.json");
  nlohmann::json e = nlohmann::json::parse(std::ifstream(dir + "/expected.json"));
  const char* path = mode == DecodeMode::kCached ? "greedy_cached" : "greedy_no_cache";
  std::vector<int32_t> want;
  for (const auto& t : e[path]["new_tokens"][0]) want.push_back(t.get<int32_t>());
  const int64_t max_new = e["max_new_tokens"].get<int64_t>();
  testing::Expected steps = testing::ReadExpected(dir + "/step_logits.safetensors");
  ASSERT_TRUE(steps.file);
  const std::vector<float> ref = steps.Floats(path);
  const int64_t V = (*model)->config().vocab_size;
  ASSERT_EQ(static_cast<int64_t>(ref.size()), static_cast<int64_t>(want.size()) * V);

  const GenRun got = Greedy(*model, in.ids, max_new, mode);
  EXPECT_EQ(got.tokens, want);
  float worst = 0;
  int64_t worst_step = -1;
  for (size_t k = 0; k < std::min(got.logits.size(), want.size()); ++k) {
    for (int64_t j = 0; j < V; ++j) {
      const float d = std::abs(got.logits[k][j] - ref[k * V + j]);
      if (d > worst) {
        worst = d;
        worst_step = static_cast<int64_t>(k);
      }
    }
  }
  std::printf("[%s %s] %zu tokens, max |dlogits| %.3g (step %lld)\n", name.c_str(), path, got.tokens.size(),
              worst, static_cast<long long>(worst_step));
  EXPECT_LE(worst, kTol) << "worst step " << worst_step;
}

INSTANTIATE_TEST_SUITE_P(
    All, GenerationFixtureTest,
    ::testing::Combine(::testing::ValuesIn(GenFixtures()),
                       ::testing::Values(DecodeMode::kCached, DecodeMode::kRecompute)),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param).substr(0, 5),
                          std::get<1>(info.param) == DecodeMode::kCached ? "_cached" : "_recompute");
    });

}  // namespace
}  // namespace reformer
