// Session behaviour beyond parity: per-document invariance (bitwise), determinism, outputs,
// the memory estimate against the workspace high-water mark, cancellation, argument errors.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/model/engine_api.h"
#include "engine/tensor/workspace.h"
#include "gtest/gtest.h"
#include "tests/engine/fixture_util.h"

namespace reformer {
namespace {

std::vector<int32_t> RandomIds(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(1 + rng() % (vocab - 1));
  return v;
}

std::unique_ptr<Session> MakeSession(std::shared_ptr<const ReformerModel> m, int64_t tile_rows = 0) {
  SessionOptions so;
  so.num_threads = 2;
  so.tile_rows = tile_rows;
  auto s = Session::Create(std::move(m), so);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::shared_ptr<const ReformerModel> LoadFixtureModel(const std::string& name) {
  auto m = ReformerModel::Load(testing::FixtureRoot() + "/" + name);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : nullptr;
}

bool Bitwise(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.f : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// A document's outputs do not depend on its batch mates or their order: bitwise here (fixed
// matmul tile rows), and never more than 1e-5 apart.
TEST(SessionTest, RaggedBatchEqualsEachDocumentAlone) {
  for (const char* fixture : {"f1_mixed_causal_multihash_rightpad", "f6_auto_buckets_leftpad_6layers"}) {
    auto model = LoadFixtureModel(fixture);
    ASSERT_TRUE(model);
    const int64_t V = model->config().vocab_size;
    const int64_t maxlen = model->config().context_length();
    std::vector<std::vector<int32_t>> docs;
    int k = 0;
    for (int64_t len : {maxlen, maxlen - 86, int64_t{40}, int64_t{33}, int64_t{100}, int64_t{7}, int64_t{129}})
      docs.push_back(RandomIds(len, V, 100 + k++));
    for (int64_t tile : {int64_t{256}, int64_t{0}}) {
      auto session = MakeSession(model, tile);
      ASSERT_TRUE(session);
      std::vector<DocumentOutput> alone(docs.size());
      for (size_t d = 0; d < docs.size(); ++d) {
        std::vector<absl::Span<const int32_t>> one = {docs[d]};
        std::vector<DocumentOutput> r;
        ASSERT_TRUE(session->RunDocuments(one, kOutputAll, &r).ok());
        alone[d] = std::move(r[0]);
      }
      std::vector<std::vector<size_t>> orders = {{0, 1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1, 0}, {2, 0, 5},
                                                 {3, 6, 1, 4}, {5, 5, 2}};
      int non_bitwise = 0;
      float worst = 0;
      for (const auto& order : orders) {
        std::vector<absl::Span<const int32_t>> batch;
        for (size_t d : order) batch.push_back(docs[d]);
        std::vector<DocumentOutput> r;
        ASSERT_TRUE(session->RunDocuments(batch, kOutputAll, &r).ok());
        for (size_t i = 0; i < order.size(); ++i) {
          const DocumentOutput& a = alone[order[i]];
          const DocumentOutput& b = r[i];
          for (auto [x, y] : {std::pair{&a.logits, &b.logits}, {&a.hidden_states, &b.hidden_states},
                              {&a.token_logprobs, &b.token_logprobs}, {&a.embedding, &b.embedding}}) {
            worst = std::max(worst, MaxDiff(*x, *y));
            non_bitwise += !Bitwise(*x, *y);
          }
        }
      }
      std::printf("[%s tile %ld] ragged vs alone: max diff %.3g, non-bitwise outputs %d\n", fixture,
                  static_cast<long>(tile), worst, non_bitwise);
      EXPECT_LE(worst, 1e-5f);
      EXPECT_EQ(non_bitwise, 0) << "expected bitwise invariance with fixed tile rows";
    }
  }
}

TEST(SessionTest, DeterministicAcrossRunsAndSessions) {
  auto model = LoadFixtureModel("f1_mixed_causal_multihash_rightpad");
  ASSERT_TRUE(model);
  std::vector<int32_t> a = RandomIds(256, 64, 1), b = RandomIds(99, 64, 2);
  std::vector<absl::Span<const int32_t>> batch = {a, b};
  std::vector<std::vector<DocumentOutput>> runs(3);
  auto s1 = MakeSession(model), s2 = MakeSession(model);
  ASSERT_TRUE(s1->RunDocuments(batch, kOutputAll, &runs[0]).ok());
  ASSERT_TRUE(s1->RunDocuments(batch, kOutputAll, &runs[1]).ok());
  ASSERT_TRUE(s2->RunDocuments(batch, kOutputAll, &runs[2]).ok());
  for (int r = 1; r < 3; ++r)
    for (size_t d = 0; d < batch.size(); ++d) {
      EXPECT_TRUE(Bitwise(runs[0][d].logits, runs[r][d].logits));
      EXPECT_TRUE(Bitwise(runs[0][d].hidden_states, runs[r][d].hidden_states));
      EXPECT_TRUE(Bitwise(runs[0][d].token_logprobs, runs[r][d].token_logprobs));
    }
}

TEST(SessionTest, OutputsAreConsistentAndOnlyWhenAsked) {
  auto model = LoadFixtureModel("f4_internal_pad_to_lcm_chunks");
  ASSERT_TRUE(model);
  const int64_t V = model->config().vocab_size, H2 = 2 * model->config().hidden_size;
  auto session = MakeSession(model);
  std::vector<int32_t> ids = RandomIds(150, V, 3);
  std::vector<absl::Span<const int32_t>> batch = {ids};
  std::vector<DocumentOutput> all, lp_only;
  ASSERT_TRUE(session->RunDocuments(batch, kOutputAll, &all).ok());
  ASSERT_TRUE(session->RunDocuments(batch, kOutputTokenLogprobs, &lp_only).ok());
  const DocumentOutput& o = all[0];
  ASSERT_EQ(o.num_tokens, 150);
  ASSERT_EQ(o.logits.size(), size_t(150 * V));
  EXPECT_EQ(o.token_logprobs[0], 0.f);
  for (int64_t t = 1; t < 150; ++t) {
    double m = -1e30, s = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max<double>(m, o.logits[(t - 1) * V + v]);
    for (int64_t v = 0; v < V; ++v) s += std::exp(o.logits[(t - 1) * V + v] - m);
    EXPECT_NEAR(o.token_logprobs[t], o.logits[(t - 1) * V + ids[t]] - m - std::log(s), 1e-5);
  }
  for (int64_t j = 0; j < H2; ++j) {
    double mean = 0;
    for (int64_t t = 0; t < 150; ++t) mean += o.hidden_states[t * H2 + j];
    EXPECT_NEAR(o.embedding[j], mean / 150, 1e-5);
  }
  EXPECT_TRUE(lp_only[0].logits.empty());
  EXPECT_TRUE(lp_only[0].hidden_states.empty());
  EXPECT_TRUE(lp_only[0].embedding.empty());
  EXPECT_TRUE(Bitwise(lp_only[0].token_logprobs, o.token_logprobs));
}

// The views form writes every element of each requested output exactly where asked (memory
// prefilled with NaN: nothing may be left), touches nothing else (outputs not requested keep
// their sentinel even when a pointer is given), and equals the owned convenience form bitwise.
TEST(SessionTest, ViewsAreWrittenCompletelyAndOnlyWhereAsked) {
  auto model = LoadFixtureModel("f4_internal_pad_to_lcm_chunks");
  ASSERT_TRUE(model);
  const ReformerConfig& c = model->config();
  auto session = MakeSession(model);
  std::vector<int32_t> a = RandomIds(150, c.vocab_size, 31), b = RandomIds(7, c.vocab_size, 32);
  std::vector<absl::Span<const int32_t>> batch = {a, b};
  const float nan = std::numeric_limits<float>::quiet_NaN(), sentinel = -12345.f;
  for (uint32_t outputs : {uint32_t{kOutputAll}, uint32_t{kOutputTokenLogprobs}, uint32_t{kOutputEmbedding},
                           uint32_t{kOutputLogits | kOutputEmbedding}, uint32_t{kOutputHiddenStates}}) {
    std::vector<DocumentOutput> owned;
    ASSERT_TRUE(session->RunDocuments(batch, outputs, &owned).ok());
    // One buffer per output kind, with guard elements after each document's region.
    constexpr int64_t kGuard = 16;
    std::vector<std::vector<float>> mem(batch.size() * 4);
    std::vector<OutputView> views(batch.size());
    for (size_t d = 0; d < batch.size(); ++d) {
      const OutputSizes sz = OutputSizesFor(c, static_cast<int64_t>(batch[d].size()));
      const int64_t n[4] = {sz.logits, sz.hidden_states, sz.token_logprobs, sz.embedding};
      float** p[4] = {&views[d].logits, &views[d].hidden_states, &views[d].token_logprobs, &views[d].embedding};
      for (int k = 0; k < 4; ++k) {
        const bool asked = outputs & (1u << k);
        std::vector<float>& m = mem[d * 4 + k];
        m.assign(n[k] + kGuard, sentinel);
        if (asked) std::fill(m.begin(), m.begin() + n[k], nan);
        *p[k] = m.data();
      }
    }
    ASSERT_TRUE(session->RunDocuments(batch, outputs, views).ok());
    for (size_t d = 0; d < batch.size(); ++d) {
      const std::vector<float>* ref[4] = {&owned[d].logits, &owned[d].hidden_states, &owned[d].token_logprobs,
                                          &owned[d].embedding};
      for (int k = 0; k < 4; ++k) {
        const std::vector<float>& m = mem[d * 4 + k];
        const size_t n = m.size() - kGuard;
        const bool asked = outputs & (1u << k);
        int64_t nans = 0, touched = 0;
        for (size_t i = 0; i < n; ++i) nans += std::isnan(m[i]);
        for (size_t i = asked ? n : 0; i < m.size(); ++i) touched += m[i] != sentinel;
        EXPECT_EQ(nans, 0) << "outputs " << outputs << " doc " << d << " kind " << k;
        EXPECT_EQ(touched, 0) << "outputs " << outputs << " doc " << d << " kind " << k;
        if (asked) {
          ASSERT_EQ(ref[k]->size(), n);
          EXPECT_EQ(std::memcmp(ref[k]->data(), m.data(), n * sizeof(float)), 0) << "kind " << k;
        } else {
          EXPECT_TRUE(ref[k]->empty());
        }
      }
    }
  }
  // Argument errors: one view per document, a pointer for every requested output.
  std::vector<float> lp(150);
  std::vector<OutputView> one(1);
  one[0].token_logprobs = lp.data();
  std::vector<absl::Span<const int32_t>> single = {a};
  EXPECT_TRUE(session->RunDocuments(single, kOutputTokenLogprobs, one).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunDocuments(batch, kOutputTokenLogprobs, one)));
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunDocuments(single, kOutputTokenLogprobs | kOutputEmbedding, one)));
  EXPECT_EQ(EstimateOutputBytes(c, {150, 7}, kOutputAll),
            sizeof(float) * (157 * (c.vocab_size + 2 * c.hidden_size + 1) + 2 * 2 * c.hidden_size));
}

// RunPadded writes [B, T, V] and [B, T, 2H] into caller memory, all positions (padding included);
// a null pointer skips that output without changing the other.
TEST(SessionTest, PaddedViewsMatchOwnedForm) {
  auto model = LoadFixtureModel("f1_mixed_causal_multihash_rightpad");
  ASSERT_TRUE(model);
  const ReformerConfig& c = model->config();
  auto session = MakeSession(model);
  const int64_t B = 2, T = 100;
  std::vector<int32_t> ids = RandomIds(B * T, c.vocab_size, 40);
  std::vector<uint8_t> mask(B * T, 1);
  for (int64_t t = 80; t < T; ++t) mask[T + t] = 0;  // row 1 right-padded
  PaddedBatch pb{B, T, ids, mask};
  PaddedOutput owned;
  ASSERT_TRUE(session->RunPadded(pb, &owned).ok());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits(B * T * c.vocab_size, nan);
  ASSERT_TRUE(session->RunPadded(pb, PaddedOutputView{logits.data(), nullptr}, nullptr).ok());
  EXPECT_TRUE(Bitwise(logits, owned.logits));
  std::vector<float> hidden(B * T * 2 * c.hidden_size, nan);
  ASSERT_TRUE(session->RunPadded(pb, PaddedOutputView{nullptr, hidden.data()}, nullptr).ok());
  EXPECT_TRUE(Bitwise(hidden, owned.hidden_states));
}

absl::StatusOr<std::shared_ptr<const ReformerModel>> MediumRandomModel() {
  auto cfg = ReformerConfig::FromJson(R"({
    "attn_layers": ["local", "lsh", "local", "lsh"], "hidden_size": 128, "num_attention_heads": 4,
    "attention_head_size": 32, "feed_forward_size": 256, "vocab_size": 258, "is_decoder": true,
    "axial_pos_shape": [64, 128], "axial_pos_embds_dim": [32, 96], "max_position_embeddings": 8192,
    "lsh_attn_chunk_length": 64, "local_attn_chunk_length": 64, "num_hashes": 2, "num_buckets": 32})",
                                      "test");
  if (!cfg.ok()) return cfg.status();
  return ReformerModel::CreateRandom(*cfg, 7);
}

// Dense-matmul FLOPs of one row (projections, attention output, FFN; + LM head when asked).
double MatmulFlopsPerRow(const ReformerConfig& c, bool lm_head) {
  const double H = c.hidden_size, A = c.num_attention_heads * c.attention_head_size, F = c.feed_forward_size;
  double f = 0;
  for (AttnType t : c.attn_layers) f += 2 * (H * A * (t == AttnType::kLsh ? 2 : 3) + A * H + 2 * H * F);
  return f + (lm_head ? 2 * (2 * H) * c.vocab_size : 0);
}

bool SameOutputs(const DocumentOutput& a, const DocumentOutput& b) {
  return Bitwise(a.logits, b.logits) && Bitwise(a.hidden_states, b.hidden_states) &&
         Bitwise(a.token_logprobs, b.token_logprobs) && Bitwise(a.embedding, b.embedding);
}

// A batch of 32 one-token documents computes one 128-row tile (not a large tile), and each of its
// documents is bitwise what it is alone and beside other batch mates of any length (documents of
// different tile sizes share a batch in separate regions of the streams).
TEST(SessionTest, SmallBatchesPayForASmallTileAndStayInvariant) {
  auto model = MediumRandomModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const ReformerConfig& c = (*model)->config();
  auto session = MakeSession(*model);  // automatic largest tile (4096 here)
  ASSERT_TRUE(session);
  std::vector<std::vector<int32_t>> ones;
  for (int i = 0; i < 32; ++i) ones.push_back(RandomIds(1, 258, 200 + i));
  std::vector<absl::Span<const int32_t>> batch(ones.begin(), ones.end());
  std::vector<DocumentOutput> together;
  ASSERT_TRUE(session->RunDocuments(batch, kOutputAll, &together).ok());
  const RunStats st = session->last_run_stats();
  EXPECT_EQ(st.tokens, 32);
  EXPECT_EQ(st.computed_rows, 128);
  EXPECT_EQ(st.matmul_flops, 128 * MatmulFlopsPerRow(c, true));
  ASSERT_TRUE(session->RunDocuments(batch, kOutputEmbedding, &together).ok());
  EXPECT_EQ(session->last_run_stats().matmul_flops, 128 * MatmulFlopsPerRow(c, false)) << "no LM head";
  ASSERT_TRUE(session->RunDocuments(batch, kOutputAll, &together).ok());

  // Batch mates of every tile size: 8192 (4096-row tiles), 5000 (512), 1024, 300 and 64 (128).
  std::vector<int32_t> l8192 = RandomIds(8192, 258, 1), l5000 = RandomIds(5000, 258, 2),
                       l1024 = RandomIds(1024, 258, 3), l300 = RandomIds(300, 258, 4), l64 = RandomIds(64, 258, 5);
  const std::vector<std::vector<absl::Span<const int32_t>>> mixes = {
      {l8192, ones[0], l300, ones[1]},
      {ones[1], l5000, ones[0], l1024, l64},
      {l64, ones[0], l300, ones[1], l1024, l8192, l5000},
  };
  std::vector<DocumentOutput> alone0, alone1;
  std::vector<absl::Span<const int32_t>> only0 = {ones[0]}, only1 = {ones[1]};
  ASSERT_TRUE(session->RunDocuments(only0, kOutputAll, &alone0).ok());
  EXPECT_EQ(session->last_run_stats().computed_rows, 128);
  ASSERT_TRUE(session->RunDocuments(only1, kOutputAll, &alone1).ok());
  EXPECT_TRUE(SameOutputs(alone0[0], together[0]));
  EXPECT_TRUE(SameOutputs(alone1[0], together[1]));
  std::map<const int32_t*, DocumentOutput> first_seen;
  for (const auto& mix : mixes) {
    std::vector<DocumentOutput> r;
    ASSERT_TRUE(session->RunDocuments(mix, kOutputAll, &r).ok());
    for (size_t i = 0; i < mix.size(); ++i) {
      if (mix[i].data() == ones[0].data()) {
        EXPECT_TRUE(SameOutputs(alone0[0], r[i]));
      }
      if (mix[i].data() == ones[1].data()) {
        EXPECT_TRUE(SameOutputs(alone1[0], r[i]));
      }
      auto [it, fresh] = first_seen.emplace(mix[i].data(), r[i]);
      if (!fresh) {
        EXPECT_TRUE(SameOutputs(it->second, r[i])) << "document of " << mix[i].size() << " tokens";
      }
    }
  }
  // The long documents alone match their results in the mixes too.
  for (auto doc : {absl::MakeConstSpan(l5000), absl::MakeConstSpan(l300)}) {
    std::vector<DocumentOutput> r;
    std::vector<absl::Span<const int32_t>> one = {doc};
    ASSERT_TRUE(session->RunDocuments(one, kOutputAll, &r).ok());
    EXPECT_TRUE(SameOutputs(first_seen.at(doc.data()), r[0])) << doc.size();
  }
}

TEST(SessionTest, MemoryEstimateWithin20PercentOfHighWater) {
  auto model = MediumRandomModel();
  ASSERT_TRUE(model.ok()) << model.status();
  for (uint32_t outputs : {uint32_t{kOutputTokenLogprobs}, uint32_t{kOutputAll}}) {
    for (std::vector<int64_t> lengths : {std::vector<int64_t>{5000}, std::vector<int64_t>{1000, 300, 77, 2000},
                                         std::vector<int64_t>{60}, std::vector<int64_t>{1, 1, 1, 8192, 3, 300}}) {
      SessionOptions so;
      so.num_threads = 2;
      so.workspace_budget_bytes = 16u << 20;
      auto session = Session::Create(*model, so);
      ASSERT_TRUE(session.ok());
      std::vector<std::vector<int32_t>> docs;
      std::vector<absl::Span<const int32_t>> batch;
      for (size_t i = 0; i < lengths.size(); ++i) docs.push_back(RandomIds(lengths[i], 258, 50 + i));
      for (const auto& d : docs) batch.push_back(d);
      std::vector<DocumentOutput> r;
      ASSERT_TRUE((*session)->RunDocuments(batch, outputs, &r).ok());
      const double hw = static_cast<double>((*session)->workspace_high_water_bytes());
      const double est = static_cast<double>(EstimatePeakWorkingBytes((*model)->config(), lengths, outputs, so));
      std::printf("lengths %zu docs (first %ld), outputs %u: high-water %.0f, estimate %.0f\n", lengths.size(),
                  static_cast<long>(lengths[0]), outputs, hw, est);
      EXPECT_GE(est, 0.8 * hw);
      EXPECT_LE(est, 1.2 * hw);
    }
  }
}

// More hash rounds than any fixed-size buffer would hold (the round combination once used a
// stack array of 64): a config with num_hashes 100 runs a 256-token document (where hashing
// starts) to finite outputs, and the estimate still equals the high-water mark.
TEST(SessionTest, HundredHashRoundsRun) {
  auto cfg = ReformerConfig::FromJson(R"({
    "attn_layers": ["lsh", "local"], "hidden_size": 64, "num_attention_heads": 2, "attention_head_size": 16,
    "feed_forward_size": 64, "vocab_size": 40, "is_decoder": true, "axial_pos_shape": [16, 32],
    "axial_pos_embds_dim": [16, 48], "max_position_embeddings": 512, "lsh_attn_chunk_length": 32,
    "local_attn_chunk_length": 32, "num_hashes": 100, "num_buckets": 8})",
                                      "test");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto model = ReformerModel::CreateRandom(*cfg, 3);
  ASSERT_TRUE(model.ok()) << model.status();
  auto session = MakeSession(*model);
  for (int64_t len : {int64_t{64}, int64_t{256}, int64_t{500}}) {
    std::vector<int32_t> ids = RandomIds(len, 40, 11);
    std::vector<absl::Span<const int32_t>> batch = {ids};
    std::vector<DocumentOutput> r;
    session->reset_workspace_high_water();
    ASSERT_TRUE(session->RunDocuments(batch, kOutputAll, &r).ok()) << len;
    int64_t bad = 0;
    for (float x : r[0].logits) bad += !std::isfinite(x);
    EXPECT_EQ(bad, 0) << len;
    SessionOptions so;
    so.num_threads = 2;
    EXPECT_EQ(session->workspace_high_water_bytes(),
              EstimatePeakWorkingBytes((*model)->config(), {len}, kOutputAll, so));
  }
}

TEST(SessionTest, CancellationStopsMidForward) {
  auto model = MediumRandomModel();
  ASSERT_TRUE(model.ok());
  auto session = MakeSession(*model);
  std::vector<int32_t> ids = RandomIds(4096, 258, 9);
  std::vector<absl::Span<const int32_t>> batch = {ids};
  std::vector<DocumentOutput> r;
  int calls = 0;
  ASSERT_TRUE(session->RunDocuments(batch, kOutputTokenLogprobs, &r, [&] { return ++calls < 0; }).ok());
  const int full = calls;
  ASSERT_GT(full, 8) << "cancel must be polled between layers and attention blocks";
  calls = 0;
  absl::Status st = session->RunDocuments(batch, kOutputTokenLogprobs, &r, [&] { return ++calls >= full / 2; });
  EXPECT_TRUE(absl::IsCancelled(st)) << st;
  EXPECT_EQ(calls, full / 2);  // stopped at the first positive poll
  // The session stays usable.
  EXPECT_TRUE(session->RunDocuments(batch, kOutputTokenLogprobs, &r).ok());
}

// The session keeps its last run's large working blocks (workspace.h) for the next run;
// ReleaseWorkspace returns them. Reused blocks hold a previous run's data (the forward takes most
// buffers uninitialised), so results must not depend on what ran before: bitwise equal to a run
// on fresh memory, also when the previous run was a different, longer batch.
TEST(SessionTest, RetainedWorkspaceIsReleasedAndDoesNotChangeResults) {
  auto model = MediumRandomModel();
  ASSERT_TRUE(model.ok()) << model.status();
  SessionOptions so;
  so.num_threads = 2;
  auto created = Session::Create(*model, so);
  ASSERT_TRUE(created.ok()) << created.status();
  Session& session = **created;
  EXPECT_EQ(session.retained_workspace_bytes(), 0u);
  EXPECT_EQ(session.ReleaseWorkspace(), 0u);

  // 3000 tokens: the residual streams alone are 3000 x 128 floats (1.5 MB) each, over the 1 MiB
  // threshold for cached blocks.
  std::vector<int32_t> doc = RandomIds(3000, 258, 61);
  std::vector<int32_t> other1 = RandomIds(4100, 258, 62), other2 = RandomIds(517, 258, 63);
  std::vector<absl::Span<const int32_t>> batch = {doc}, other = {other1, other2};
  auto run = [&](std::vector<absl::Span<const int32_t>>& b, std::vector<DocumentOutput>* r) {
    ASSERT_TRUE(session.RunDocuments(b, kOutputAll, r).ok());
  };
  auto same = [](const DocumentOutput& a, const DocumentOutput& b) {
    return Bitwise(a.logits, b.logits) && Bitwise(a.hidden_states, b.hidden_states) &&
           Bitwise(a.token_logprobs, b.token_logprobs) && Bitwise(a.embedding, b.embedding);
  };

  std::vector<DocumentOutput> fresh, reused, dirtied, released;
  run(batch, &fresh);  // fresh memory
  ASSERT_EQ(fresh.size(), 1u);
  ASSERT_EQ(fresh[0].logits.size(), size_t{3000} * 258);
  // Sanitizer builds keep nothing between runs (plain heap blocks, workspace.h).
  const size_t min_retained = Workspace::kRecyclesBlocks ? 1 : 0;
  const size_t retained = session.retained_workspace_bytes();
  if (Workspace::kRecyclesBlocks) {
    EXPECT_GT(retained, size_t{1} << 20);
  } else {
    EXPECT_EQ(retained, 0u);
  }
  // Kept at most the run's planned peak plus the slack forward.cc allows (1/8 + 16 MiB).
  const int64_t len = 3000;
  const size_t plan =
      EstimatePeakWorkingBytes((*model)->config(), absl::MakeConstSpan(&len, 1), kOutputAll, so);
  EXPECT_LE(retained, plan + plan / 8 + (size_t{16} << 20)) << "plan " << plan;
  std::printf("retained after a 3000-token run: %zu bytes (plan %zu)\n", retained, plan);

  run(batch, &reused);  // on the cached blocks of the same batch
  EXPECT_GE(session.retained_workspace_bytes(), min_retained);
  run(other, &dirtied);  // a different, larger batch fills the blocks with other data
  EXPECT_GE(session.retained_workspace_bytes(), min_retained);
  std::vector<DocumentOutput> after_other;
  run(batch, &after_other);

  const size_t before_release = session.retained_workspace_bytes();
  EXPECT_GE(before_release, min_retained);
  EXPECT_EQ(session.ReleaseWorkspace(), before_release);
  EXPECT_EQ(session.retained_workspace_bytes(), 0u);
  EXPECT_EQ(session.ReleaseWorkspace(), 0u);  // nothing left
  run(batch, &released);                      // fresh memory again
  EXPECT_GE(session.retained_workspace_bytes(), min_retained);

  EXPECT_TRUE(same(fresh[0], reused[0])) << "second run on reused blocks differs";
  EXPECT_TRUE(same(fresh[0], after_other[0])) << "run after a different batch differs";
  EXPECT_TRUE(same(fresh[0], released[0])) << "run after ReleaseWorkspace differs";

  // The other batch on reused blocks equals the same batch on a fresh session.
  auto fresh_session = MakeSession(*model);
  ASSERT_TRUE(fresh_session);
  std::vector<DocumentOutput> other_fresh;
  ASSERT_TRUE(fresh_session->RunDocuments(other, kOutputAll, &other_fresh).ok());
  ASSERT_EQ(other_fresh.size(), 2u);
  EXPECT_TRUE(same(other_fresh[0], dirtied[0]));
  EXPECT_TRUE(same(other_fresh[1], dirtied[1]));
}

TEST(SessionTest, ArgumentErrors) {
  auto model = LoadFixtureModel("f1_mixed_causal_multihash_rightpad");
  ASSERT_TRUE(model);
  auto session = MakeSession(model);
  std::vector<DocumentOutput> r;
  std::vector<int32_t> empty, bad = {1, 2, 64}, too_long(300, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunDocuments({}, kOutputAll, &r)));
  std::vector<absl::Span<const int32_t>> b1 = {empty}, b2 = {bad}, b3 = {too_long};
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunDocuments(b1, kOutputAll, &r)));
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunDocuments(b2, kOutputAll, &r)));
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunDocuments(b3, kOutputAll, &r)));
  const std::vector<int32_t> three = {1, 2, 3};
  PaddedBatch pb{2, 3, three, {}};
  PaddedOutput po;
  EXPECT_TRUE(absl::IsInvalidArgument(session->RunPadded(pb, &po)));
  SessionOptions tiny;
  tiny.workspace_budget_bytes = 1024;
  EXPECT_TRUE(absl::IsResourceExhausted(Session::Create(model, tiny).status()));
}

}  // namespace
}  // namespace reformer
