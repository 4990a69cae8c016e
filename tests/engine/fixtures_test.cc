// Parity with the HF fixtures (docs/engine-numerics.md): padded-batch mode against the top-level
// expectations (logits and hidden states within 1e-4 at valid positions, LSH buckets identical) and
// per-document mode against every solo/ row, or for a fixture without padding (f2) against its
// rows (within 1e-4).
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/model/engine_api.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/fixture_util.h"

namespace reformer {
namespace {

using testing::Expected;
using testing::FixtureInputs;

constexpr float kTol = 1e-4f;

struct Loaded {
  std::shared_ptr<const ReformerModel> model;
  std::unique_ptr<Session> session;
};

Loaded LoadFixture(const std::string& name) {
  Loaded l;
  auto m = ReformerModel::Load(testing::FixtureRoot() + "/" + name);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return l;
  l.model = *m;
  SessionOptions so;
  so.num_threads = 2;
  auto s = Session::Create(l.model, so);
  EXPECT_TRUE(s.ok()) << s.status();
  if (s.ok()) l.session = std::move(s).value();
  return l;
}

class FixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, PaddedBatchMatchesHf) {
  const std::string dir = testing::FixtureRoot() + "/" + GetParam();
  Loaded l = LoadFixture(GetParam());
  ASSERT_TRUE(l.session);
  const ReformerConfig& c = l.model->config();
  FixtureInputs in = testing::ReadInputs(dir + "/inputs.json");
  PaddedBatch batch{in.batch, in.length, in.ids, in.mask};
  PaddedOutput out;
  ASSERT_TRUE(l.session->RunPadded(batch, &out).ok());
  Expected e = testing::ReadExpected(dir + "/expected.safetensors");
  ASSERT_TRUE(e.file);
  std::vector<float> logits = e.Floats("logits"), hidden = e.Floats("hidden_states");
  std::vector<int32_t> valid = e.Ints("valid_mask");
  const int64_t V = c.vocab_size, H2 = 2 * c.hidden_size;
  ASSERT_EQ(out.logits.size(), logits.size());
  ASSERT_EQ(out.hidden_states.size(), hidden.size());
  float max_l = 0, max_h = 0;
  for (int64_t r = 0; r < in.batch * in.length; ++r) {
    if (!valid[r]) continue;
    for (int64_t j = 0; j < V; ++j) max_l = std::max(max_l, std::abs(out.logits[r * V + j] - logits[r * V + j]));
    for (int64_t j = 0; j < H2; ++j)
      max_h = std::max(max_h, std::abs(out.hidden_states[r * H2 + j] - hidden[r * H2 + j]));
  }
  EXPECT_LE(max_l, kTol) << "max |logits diff| at valid positions";
  EXPECT_LE(max_h, kTol) << "max |hidden diff| at valid positions";
  std::printf("[%s] padded: max |dlogits| %.3g, max |dhidden| %.3g\n", GetParam().c_str(), max_l, max_h);

  // Buckets of every LSH layer that hashed.
  int expected_layers = 0;
  for (int64_t i = 0; i < c.num_layers(); ++i) {
    std::vector<int32_t> b = e.Ints(absl::StrCat("encoder.layers.", i, ".buckets"));
    if (b.empty()) continue;
    ++expected_layers;
    auto it = std::find(out.bucket_layers.begin(), out.bucket_layers.end(), static_cast<int>(i));
    ASSERT_NE(it, out.bucket_layers.end()) << "layer " << i;
    const std::vector<int32_t>& got = out.buckets[it - out.bucket_layers.begin()];
    ASSERT_EQ(got.size(), b.size()) << "layer " << i;
    int64_t mismatches = 0;
    for (size_t j = 0; j < b.size(); ++j) mismatches += got[j] != b[j];
    EXPECT_EQ(mismatches, 0) << "layer " << i << " bucket mismatches";
  }
  EXPECT_EQ(static_cast<int>(out.bucket_layers.size()), expected_layers);
}

// One document and what HF computes for it alone.
struct SoloDocument {
  std::vector<int32_t> ids;
  std::vector<float> logits, hidden;
};

// The solo/ rows of a fixture; a fixture without them must have no mask, and then each row of the
// top-level batch is a document as HF computes it alone (no padding, rows independent).
std::vector<SoloDocument> SoloDocuments(const std::string& dir) {
  std::vector<SoloDocument> docs;
  if (!std::filesystem::exists(dir + "/solo/index.json")) {
    FixtureInputs in = testing::ReadInputs(dir + "/inputs.json");
    EXPECT_TRUE(in.mask.empty()) << dir << ": a masked fixture needs solo/ rows";
    Expected e = testing::ReadExpected(dir + "/expected.safetensors");
    EXPECT_TRUE(e.file);
    if (!in.mask.empty() || !e.file) return docs;
    std::vector<float> logits = e.Floats("logits"), hidden = e.Floats("hidden_states");
    const size_t nl = logits.size() / in.batch, nhid = hidden.size() / in.batch;
    for (int64_t b = 0; b < in.batch; ++b)
      docs.push_back({std::vector<int32_t>(in.ids.begin() + b * in.length, in.ids.begin() + (b + 1) * in.length),
                      std::vector<float>(logits.begin() + b * nl, logits.begin() + (b + 1) * nl),
                      std::vector<float>(hidden.begin() + b * nhid, hidden.begin() + (b + 1) * nhid)});
    return docs;
  }
  nlohmann::json index = nlohmann::json::parse(std::ifstream(dir + "/solo/index.json"));
  for (const auto& row : index["rows"]) {
    const std::string rd = dir + "/solo/" + row["dir"].get<std::string>();
    Expected e = testing::ReadExpected(rd + "/expected.safetensors");
    EXPECT_TRUE(e.file) << rd;
    if (!e.file) return {};
    docs.push_back({testing::ReadInputs(rd + "/inputs.json").ids, e.Floats("logits"), e.Floats("hidden_states")});
  }
  return docs;
}

TEST_P(FixtureTest, PerDocumentMatchesSoloRows) {
  const std::string dir = testing::FixtureRoot() + "/" + GetParam();
  Loaded l = LoadFixture(GetParam());
  ASSERT_TRUE(l.session);
  const std::vector<SoloDocument> docs = SoloDocuments(dir);
  ASSERT_FALSE(docs.empty());
  auto check = [&](const DocumentOutput& o, size_t k, const std::string& what) {
    const std::vector<float>&logits = docs[k].logits, &hidden = docs[k].hidden;
    ASSERT_EQ(o.logits.size(), logits.size()) << what;
    ASSERT_EQ(o.hidden_states.size(), hidden.size()) << what;
    float max_l = 0, max_h = 0;
    for (size_t j = 0; j < logits.size(); ++j) max_l = std::max(max_l, std::abs(o.logits[j] - logits[j]));
    for (size_t j = 0; j < hidden.size(); ++j) max_h = std::max(max_h, std::abs(o.hidden_states[j] - hidden[j]));
    EXPECT_LE(max_l, kTol) << what;
    EXPECT_LE(max_h, kTol) << what;
    std::printf("[%s] %s: max |dlogits| %.3g, max |dhidden| %.3g\n", GetParam().c_str(), what.c_str(), max_l,
                max_h);
  };
  // Each document alone, then all together as one ragged batch.
  std::vector<absl::Span<const int32_t>> all;
  for (size_t k = 0; k < docs.size(); ++k) {
    std::vector<absl::Span<const int32_t>> one = {absl::MakeConstSpan(docs[k].ids)};
    std::vector<DocumentOutput> res;
    ASSERT_TRUE(l.session->RunDocuments(one, kOutputLogits | kOutputHiddenStates, &res).ok());
    check(res[0], k, absl::StrCat("solo row ", k, " alone"));
    all.push_back(absl::MakeConstSpan(docs[k].ids));
  }
  std::vector<DocumentOutput> res;
  ASSERT_TRUE(l.session->RunDocuments(all, kOutputLogits | kOutputHiddenStates, &res).ok());
  for (size_t k = 0; k < docs.size(); ++k) check(res[k], k, absl::StrCat("solo row ", k, " in ragged batch"));
}

INSTANTIATE_TEST_SUITE_P(All, FixtureTest, ::testing::ValuesIn(testing::FixtureNames()),
                         [](const auto& info) { return info.param.substr(0, 2); });

}  // namespace
}  // namespace reformer
