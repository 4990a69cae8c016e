// Decoder behaviour beyond parity: a sequence's logits are bitwise the same alone or in any batch
// (random mixes, sequences joining and leaving, cached and recompute together, a prefill
// interleaved with other sequences' steps), seeded sampling gives the same tokens alone or beside
// others, recompute equals the forward, the cache's byte count is what is mapped and is freed at
// once, and argument errors.
#include <unistd.h>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/decoder.h"
#include "engine/model/generation.h"
#include "gtest/gtest.h"
#include "tests/engine/random_model.h"

namespace reformer {
namespace {

// Small chunks so that short sequences go through every state: plain LSH, the step that starts
// hashing, hashed steps; a padded prompt; 3 hash rounds; local chunk != LSH chunk.
constexpr char kConfig[] = R"({"attn_layers": ["local", "lsh", "local", "lsh"], "hidden_size": 32,
  "num_attention_heads": 2, "attention_head_size": 16, "feed_forward_size": 64, "vocab_size": 40,
  "is_decoder": true, "lsh_attn_chunk_length": 8, "local_attn_chunk_length": 16, "num_hashes": 3,
  "num_buckets": [2, 4], "axial_pos_shape": [16, 16], "axial_pos_embds_dim": [8, 24],
  "max_position_embeddings": 256, "eos_token_id": 2})";

std::shared_ptr<const ReformerModel> Model() {
  static std::shared_ptr<const ReformerModel> m = [] {
    const char* b = std::getenv("REFORMER_BINARY_DIR");
    // One directory per process: the per-ISA copies of this test may run at once (ctest -j).
    const std::string dir = std::string(b ? b : "/tmp") + "/decoder_test_model_" + std::to_string(getpid());
    EXPECT_EQ(testing::WriteRandomModel(dir, kConfig, 3), "");
    auto loaded = ReformerModel::Load(dir);
    std::filesystem::remove_all(dir);  // loaded into memory (or mapped: unlinked files stay readable)
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *loaded : nullptr;
  }();
  return m;
}

std::unique_ptr<Decoder> MakeDecoder(int threads = 2) {
  auto d = Decoder::Create(Model(), DecoderOptions{threads});
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? std::move(d).value() : nullptr;
}

struct Script {
  std::vector<int32_t> prompt;
  std::vector<int32_t> feed;  // tokens fed, one per step
  DecodeMode mode = DecodeMode::kCached;
};

std::vector<Script> Scripts() {
  std::mt19937 rng(11);
  std::vector<Script> s;
  // 200 and 150 tokens take larger forward tiles than the rest (engine/model/forward.h): a batch
  // of them spans several regions of the streams.
  const int64_t lengths[] = {1, 5, 7, 8, 9, 20, 33, 64, 100, 200, 150};
  for (size_t i = 0; i < std::size(lengths); ++i) {
    Script sc;
    for (int64_t t = 0; t < lengths[i]; ++t) sc.prompt.push_back(static_cast<int32_t>(3 + rng() % 37));
    for (int t = 0; t < 24; ++t) sc.feed.push_back(static_cast<int32_t>(3 + rng() % 37));
    sc.mode = i % 4 == 3 ? DecodeMode::kRecompute : DecodeMode::kCached;
    s.push_back(sc);
  }
  return s;
}

using Logits = std::vector<std::vector<float>>;  // per step (0 = prefill)

// Each script alone.
std::vector<Logits> Alone(const std::vector<Script>& scripts) {
  auto dec = MakeDecoder();
  const int64_t V = Model()->config().vocab_size;
  std::vector<Logits> out;
  for (const Script& sc : scripts) {
    auto st = DecodeState::Create(*Model(), sc.prompt, sc.feed.size() + 1, sc.mode);
    EXPECT_TRUE(st.ok());
    DecodeState* s = st->get();
    std::vector<float> l(V);
    float* dst = l.data();
    Logits lg;
    EXPECT_TRUE(dec->Prefill({&s, 1}, {&dst, 1}).ok());
    lg.push_back(l);
    for (int32_t tok : sc.feed) {
      EXPECT_TRUE(dec->Step({&s, 1}, {&tok, 1}, {&dst, 1}).ok());
      lg.push_back(l);
    }
    out.push_back(lg);
  }
  return out;
}

TEST(DecoderTest, BatchedStepsAreBitwiseTheSameAsAlone) {
  const std::vector<Script> scripts = Scripts();
  const std::vector<Logits> alone = Alone(scripts);
  const int64_t V = Model()->config().vocab_size;
  auto dec = MakeDecoder();
  for (uint32_t round = 0; round < 4; ++round) {
    // Sequences join at random steps (several prefills at once), leave at random lengths, and each
    // step takes the active ones in a random order.
    std::mt19937 rng(100 + round);
    struct Live {
      size_t script;
      std::unique_ptr<DecodeState> state;
      size_t fed = 0, stop_after;
      std::vector<float> logits;
      bool done = false;
    };
    std::vector<Live> live;
    size_t next = 0;
    int mismatches = 0, compared = 0;
    while (next < scripts.size() || !live.empty()) {
      std::vector<DecodeState*> join;
      std::vector<float*> join_dst;
      for (int k = rng() % 3; k > 0 && next < scripts.size(); --k, ++next) {
        const Script& sc = scripts[next];
        Live l{next, std::move(DecodeState::Create(*Model(), sc.prompt, sc.feed.size() + 1, sc.mode)).value(), 0,
               5 + rng() % sc.feed.size(), std::vector<float>(V)};
        live.push_back(std::move(l));
      }
      for (Live& l : live) {
        if (l.state->prefilled()) continue;
        join.push_back(l.state.get());
        join_dst.push_back(l.logits.data());
      }
      if (!join.empty()) {
        ASSERT_TRUE(dec->Prefill(absl::MakeSpan(join), absl::MakeSpan(join_dst)).ok());
      }
      std::shuffle(live.begin(), live.end(), rng);
      std::vector<DecodeState*> step;
      std::vector<float*> dst;
      std::vector<int32_t> toks;
      for (Live& l : live) {
        const Logits& want = alone[l.script];
        if (std::memcmp(l.logits.data(), want[l.fed].data(), sizeof(float) * V) != 0) ++mismatches;
        ++compared;
        l.done = l.fed == l.stop_after || l.fed == scripts[l.script].feed.size();
        if (l.done) continue;
        step.push_back(l.state.get());
        dst.push_back(l.logits.data());
        toks.push_back(scripts[l.script].feed[l.fed++]);
      }
      if (!step.empty()) {
        ASSERT_TRUE(dec->Step(absl::MakeSpan(step), toks, absl::MakeSpan(dst)).ok());
      }
      live.erase(std::remove_if(live.begin(), live.end(), [](const Live& l) { return l.done; }), live.end());
    }
    std::printf("round %u: %d of %d compared logits rows differ from the sequence alone\n", round, mismatches, compared);
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(compared, 100);
  }
}

// The step's threads each take a share of the sequences through every layer on their own (no
// barrier between layers), so at one moment they may be in layers of different types. An uneven
// split (1 sequence on one thread, 2 on the other) lets them drift apart; every step of every
// repetition must still give each sequence its logits alone, bitwise.
TEST(DecoderTest, UnevenThreadSharesStayBitwiseTheSame) {
  std::vector<Script> scripts = Scripts();
  scripts = {scripts[8], scripts[9], scripts[6]};  // 100, 200 and 20 tokens: all cached
  for (Script& sc : scripts) sc.mode = DecodeMode::kCached;
  const std::vector<Logits> alone = Alone(scripts);
  const int64_t V = Model()->config().vocab_size;
  auto dec = MakeDecoder(2);
  int mismatches = 0;
  for (int rep = 0; rep < 30; ++rep) {
    std::vector<std::unique_ptr<DecodeState>> states;
    std::vector<DecodeState*> seqs;
    std::vector<std::vector<float>> logits(scripts.size(), std::vector<float>(V));
    std::vector<float*> dst;
    for (size_t i = 0; i < scripts.size(); ++i) {
      states.push_back(
          std::move(DecodeState::Create(*Model(), scripts[i].prompt, scripts[i].feed.size() + 1, DecodeMode::kCached))
              .value());
      seqs.push_back(states.back().get());
      dst.push_back(logits[i].data());
    }
    ASSERT_TRUE(dec->Prefill(absl::MakeSpan(seqs), absl::MakeSpan(dst)).ok());
    for (size_t t = 0; t < scripts[0].feed.size(); ++t) {
      std::vector<int32_t> toks;
      for (const Script& sc : scripts) toks.push_back(sc.feed[t]);
      ASSERT_TRUE(dec->Step(absl::MakeSpan(seqs), toks, absl::MakeSpan(dst)).ok());
      for (size_t i = 0; i < scripts.size(); ++i)
        mismatches += std::memcmp(logits[i].data(), alone[i][t + 1].data(), sizeof(float) * V) != 0;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DecoderTest, PrefillInterleavedWithStepsChangesNothing) {
  const std::vector<Script> scripts = Scripts();
  const std::vector<Logits> alone = Alone(scripts);
  const int64_t V = Model()->config().vocab_size;
  auto dec = MakeDecoder();
  // Sequences 0..5 are running; sequence 8 (100 tokens) is prefilled while they step between layers.
  std::vector<std::unique_ptr<DecodeState>> run;
  std::vector<std::vector<float>> logits(6, std::vector<float>(V));
  std::vector<size_t> fed(6, 0);
  for (size_t i = 0; i < 6; ++i) {
    run.push_back(std::move(DecodeState::Create(*Model(), scripts[i].prompt, 25, scripts[i].mode)).value());
    DecodeState* s = run[i].get();
    float* d = logits[i].data();
    ASSERT_TRUE(dec->Prefill({&s, 1}, {&d, 1}).ok());
  }
  int calls = 0;
  BetweenLayersFn between = [&](int64_t) {
    ++calls;
    std::vector<DecodeState*> s;
    std::vector<float*> d;
    std::vector<int32_t> t;
    for (size_t i = 0; i < 6; ++i) {
      s.push_back(run[i].get());
      d.push_back(logits[i].data());
      t.push_back(scripts[i].feed[fed[i]++]);
    }
    return dec->Step(absl::MakeSpan(s), t, absl::MakeSpan(d));
  };
  auto big = std::move(DecodeState::Create(*Model(), scripts[8].prompt, 25, DecodeMode::kCached)).value();
  std::vector<float> big_logits(V);
  DecodeState* b = big.get();
  float* bd = big_logits.data();
  ASSERT_TRUE(dec->Prefill({&b, 1}, {&bd, 1}, nullptr, between).ok());
  // Between layers and inside them (heads' attention, attention and feed-forward).
  EXPECT_GT(calls, 2 * Model()->config().num_layers());
  EXPECT_EQ(std::memcmp(big_logits.data(), alone[8][0].data(), sizeof(float) * V), 0);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(std::memcmp(logits[i].data(), alone[i][fed[i]].data(), sizeof(float) * V), 0) << i;
  // And the interleaved sequence goes on as if alone.
  int32_t tok = scripts[8].feed[0];
  ASSERT_TRUE(dec->Step({&b, 1}, {&tok, 1}, {&bd, 1}).ok());
  EXPECT_EQ(std::memcmp(big_logits.data(), alone[8][1].data(), sizeof(float) * V), 0);
}

// Running sequences' logits at every step, fed token (3 + 7 k + i) % V at step k; `between` (if
// any) is the prefill hook under which they step.
struct Runners {
  std::vector<std::unique_ptr<DecodeState>> states;
  std::vector<Logits> logits;  // [sequence][step]
  int64_t steps = 0;
  absl::Status Step(Decoder* dec) {
    const int64_t V = Model()->config().vocab_size;
    std::vector<DecodeState*> s;
    std::vector<float*> d;
    std::vector<int32_t> t;
    for (size_t i = 0; i < states.size(); ++i) {
      logits[i].emplace_back(V);
      s.push_back(states[i].get());
      d.push_back(logits[i].back().data());
      t.push_back(static_cast<int32_t>((3 + 7 * steps + i) % V));
    }
    ++steps;
    return dec->Step(absl::MakeSpan(s), t, absl::MakeSpan(d));
  }
};

Runners StartRunners(Decoder* dec) {
  Runners r;
  const int64_t V = Model()->config().vocab_size;
  for (int64_t len : {5, 20, 40}) {
    std::vector<int32_t> prompt;
    for (int64_t t = 0; t < len; ++t) prompt.push_back(static_cast<int32_t>(3 + (t * 11 + len) % (V - 3)));
    r.states.push_back(std::move(DecodeState::Create(*Model(), prompt, 120, DecodeMode::kCached)).value());
    r.logits.emplace_back(1, std::vector<float>(V));
    DecodeState* s = r.states.back().get();
    float* d = r.logits.back()[0].data();
    EXPECT_TRUE(dec->Prefill({&s, 1}, {&d, 1}).ok());
  }
  return r;
}

// A 240-token prompt in 128-row tiles: the running sequences step between the tiles of each
// product, not only between layers, and neither side's numbers change.
TEST(DecoderTest, LongPrefillLetsOthersStepBetweenTiles) {
  DecoderOptions o{2};
  o.tile_rows = 128;
  auto dec = std::move(Decoder::Create(Model(), o)).value();
  const int64_t V = Model()->config().vocab_size;
  std::vector<int32_t> prompt;
  for (int64_t t = 0; t < 240; ++t) prompt.push_back(static_cast<int32_t>(3 + (t * 13) % (V - 3)));
  auto prefill = [&](const BetweenLayersFn& between) {
    auto st = std::move(DecodeState::Create(*Model(), prompt, 2, DecodeMode::kCached)).value();
    std::vector<float> l(V);
    DecodeState* s = st.get();
    float* d = l.data();
    EXPECT_TRUE(dec->Prefill({&s, 1}, {&d, 1}, nullptr, between).ok());
    return l;
  };
  Runners mixed = StartRunners(dec.get());
  const std::vector<float> interleaved = prefill([&](int64_t) { return mixed.Step(dec.get()); });
  // Each product of a layer spans two tiles, so there are more than 3 calls per layer.
  EXPECT_GT(mixed.steps, 3 * Model()->config().num_layers());
  const std::vector<float> alone = prefill(nullptr);
  EXPECT_EQ(std::memcmp(interleaved.data(), alone.data(), sizeof(float) * V), 0);
  Runners ref = StartRunners(dec.get());
  for (int64_t k = 0; k < mixed.steps; ++k) ASSERT_TRUE(ref.Step(dec.get()).ok());
  int64_t mismatches = 0;
  for (size_t i = 0; i < ref.logits.size(); ++i)
    for (int64_t k = 0; k <= mixed.steps; ++k)
      mismatches += std::memcmp(ref.logits[i][k].data(), mixed.logits[i][k].data(), sizeof(float) * V) != 0;
  EXPECT_EQ(mismatches, 0);
}

TEST(DecoderTest, RecomputeEqualsTheForwardOfTheWholeSequence) {
  const int64_t V = Model()->config().vocab_size;
  auto dec = MakeDecoder();
  SessionOptions so;
  so.num_threads = 2;
  auto session = std::move(Session::Create(Model(), so)).value();
  const Script sc = Scripts()[5];
  auto st = std::move(DecodeState::Create(*Model(), sc.prompt, 30, DecodeMode::kRecompute)).value();
  DecodeState* s = st.get();
  std::vector<float> l(V);
  float* d = l.data();
  ASSERT_TRUE(dec->Prefill({&s, 1}, {&d, 1}).ok());
  std::vector<int32_t> seq = sc.prompt;
  float worst = 0;
  for (size_t k = 0; k <= 20; ++k) {
    std::vector<DocumentOutput> out;
    ASSERT_TRUE(session->RunDocuments({seq}, kOutputLogits, &out).ok());
    for (int64_t j = 0; j < V; ++j) worst = std::max(worst, std::abs(out[0].logits[(seq.size() - 1) * V + j] - l[j]));
    if (k == 20) break;
    seq.push_back(sc.feed[k]);
    ASSERT_TRUE(dec->Step({&s, 1}, {&sc.feed[k], 1}, {&d, 1}).ok());
  }
  EXPECT_LE(worst, 1e-5f);
}

TEST(DecoderTest, SeededSamplingGivesTheSameTokensAloneOrBesideOthers) {
  std::vector<GenerationRequest> reqs;
  const std::vector<Script> scripts = Scripts();
  for (size_t i = 0; i < scripts.size(); ++i) {
    GenerationRequest r;
    r.prompt = scripts[i].prompt;
    r.params.max_new_tokens = 20 + static_cast<int64_t>(i);
    r.params.mode = scripts[i].mode;
    r.params.sampling.temperature = 0.9f;
    r.params.sampling.top_k = 20;
    r.params.sampling.top_p = 0.95f;
    r.params.sampling.seed = 1000 + i % 3;
    r.params.ignore_eos = i % 2 == 0;
    reqs.push_back(r);
  }
  auto dec = MakeDecoder();
  std::vector<GenerationResult> alone;
  for (const GenerationRequest& r : reqs) alone.push_back(std::move(Generate(dec.get(), *Model(), {&r, 1})).value()[0]);
  for (int64_t max_active : {0, 2, 4}) {
    GenerateOptions o;
    o.max_active = max_active;
    auto together = Generate(dec.get(), *Model(), reqs, o);
    ASSERT_TRUE(together.ok());
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ((*together)[i].tokens, alone[i].tokens) << i;
      EXPECT_EQ((*together)[i].logprobs, alone[i].logprobs) << i;
      EXPECT_EQ((*together)[i].finish, alone[i].finish) << i;
    }
  }
  GenerationRequest other = reqs[0];
  other.params.sampling.seed = 77;
  EXPECT_NE(std::move(Generate(dec.get(), *Model(), {&other, 1})).value()[0].tokens, alone[0].tokens);
}

int64_t VmSizeKb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmSize:", 0) == 0) return std::stoll(line.substr(7));
  return -1;
}

TEST(DecoderTest, CacheBytesAreWhatIsMappedAndFreedAtOnce) {
  const ReformerConfig& c = Model()->config();
  for (DecodeMode mode : {DecodeMode::kCached, DecodeMode::kRecompute})
    for (int64_t t0 : {1, 7, 8, 30, 100})
      for (int64_t max_new : {1, 2, 50, 150}) {
        std::vector<int32_t> prompt(t0, 5);
        const size_t estimate = DecodeState::EstimateBytes(c, t0, max_new, mode);
        const int64_t before = VmSizeKb();
        auto st = DecodeState::Create(*Model(), prompt, max_new, mode);
        ASSERT_TRUE(st.ok());
        const int64_t mapped = (VmSizeKb() - before) * 1024;
        EXPECT_EQ((*st)->bytes(), estimate);
        // The mapping is all but a few hundred bytes of bookkeeping objects on the heap.
        EXPECT_LE(mapped, static_cast<int64_t>(estimate));
        EXPECT_GE(mapped + 4096, static_cast<int64_t>(estimate));
        st->reset();
        EXPECT_EQ(VmSizeKb(), before);
      }
  // The LSH layers keep every position, the local ones a ring of (before + 1) * chunk rows.
  const size_t per_position = 2 * sizeof(float) * 2 * 2 * 16;
  EXPECT_GT(DecodeState::EstimateBytes(c, 200, 40, DecodeMode::kCached),
            DecodeState::EstimateBytes(c, 100, 40, DecodeMode::kCached) + 100 * per_position - 4096);
}

TEST(DecoderTest, ArgumentErrorsAndCancellation) {
  auto dec = MakeDecoder();
  const int64_t V = Model()->config().vocab_size;
  std::vector<float> l(V);
  float* d = l.data();
  auto st = std::move(DecodeState::Create(*Model(), std::vector<int32_t>{3, 4, 5}, 2, DecodeMode::kCached)).value();
  DecodeState* s = st.get();
  int32_t tok = 3;
  EXPECT_TRUE(absl::IsInvalidArgument(dec->Step({&s, 1}, {&tok, 1}, {&d, 1})));  // not prefilled
  CancelFn cancel = [] { return true; };
  EXPECT_TRUE(absl::IsCancelled(dec->Prefill({&s, 1}, {&d, 1}, cancel)));
  EXPECT_FALSE(s->prefilled());
  ASSERT_TRUE(dec->Prefill({&s, 1}, {&d, 1}).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(dec->Prefill({&s, 1}, {&d, 1})));  // twice
  DecodeState* twice[2] = {s, s};
  float* dd[2] = {d, d};
  int32_t tt[2] = {3, 3};
  EXPECT_TRUE(absl::IsInvalidArgument(dec->Step(twice, tt, dd)));
  tok = static_cast<int32_t>(V);
  EXPECT_TRUE(absl::IsInvalidArgument(dec->Step({&s, 1}, {&tok, 1}, {&d, 1})));
  tok = 3;
  EXPECT_TRUE(absl::IsCancelled(dec->Step({&s, 1}, {&tok, 1}, {&d, 1}, cancel)));
  ASSERT_TRUE(dec->Step({&s, 1}, {&tok, 1}, {&d, 1}).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(dec->Step({&s, 1}, {&tok, 1}, {&d, 1})));  // full: 3 + 2 - 1 positions
  EXPECT_TRUE(absl::IsInvalidArgument(
      DecodeState::Create(*Model(), std::vector<int32_t>(250, 3), 7, DecodeMode::kCached).status()));
}

}  // namespace
}  // namespace reformer
