// reformer.v1 Generate end to end: an in-process gRPC server with the real GenerationService and
// engine Decoders on the generation fixtures (tests/fixtures/generation/).
//  - Served greedy tokens equal Hugging Face's (expected.json, both decode modes, EOS included) and
//    the offline engine's (engine/model/generation.h Generate, one sequence alone).
//  - Batch invariance: several different concurrent requests (prompts, lengths, modes, sampling
//    parameters, seeds, logprobs) give bitwise the tokens and logprobs each gives alone; the test
//    also checks that they really shared decoding steps (continuous batching).
//  - Seed 0: the server picks a seed and returns it; asking again with it repeats the tokens.
//  - Bad requests: INVALID_ARGUMENT with the numbers; a cancelled stream frees its cache.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/model/decoder.h"
#include "engine/model/engine_api.h"
#include "engine/model/generation.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "proto/reformer.grpc.pb.h"
#include "server/batching/clock.h"
#include "server/batching/memory_budget.h"
#include "server/grpc/grpc_server.h"
#include "server/health/health_state.h"
#include "server/inference/generation_service.h"
#include "server/metrics/server_metrics.h"

namespace reformer::serving {
namespace {

namespace v1 = ::reformer::v1;

std::string FixtureDir(const std::string& name) {
  const char* src = std::getenv("REFORMER_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/fixtures/generation/" + name;
}

// Counts the most sequences the service had running at once (ServerMetrics does the rest).
class PeakObserver final : public GenerationObserver {
 public:
  void OnActiveSequences(int64_t n) override {
    int64_t seen = peak.load();
    while (n > seen && !peak.compare_exchange_weak(seen, n)) {
    }
  }
  std::atomic<int64_t> peak{0};
};

// A server with generation only (no forward workers) on one model.
struct GenServer {
  // `address`: where to listen, "127.0.0.1:0" or a "unix:PATH".
  explicit GenServer(const std::string& dir, GenerationOptions options = {}, ServiceLimits limits = {},
                     const std::string& address = "127.0.0.1:0")
      : target(address) {
    auto loaded = ReformerModel::Load(dir);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    model = *loaded;
    budget = *MemoryBudget::Create(int64_t{1} << 30);
    options.threads_per_worker = 1;
    auto g = GenerationService::Create(model, options, budget, &clock, &observer);
    EXPECT_TRUE(g.ok()) << g.status();
    generation = *std::move(g);
    served.name = "gen";
    served.config = model->config();
    env.generation = generation.get();
    env.limits = limits;
    env.model = &served;
    env.health = &health;
    env.clock = &clock;
    GrpcServerOptions go;
    go.address = address;
    auto s = GrpcServer::Start(go, env, &health);
    EXPECT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
    health.SetReady();
    if (!absl::StartsWith(address, "unix:")) target = "127.0.0.1:" + std::to_string(server->port());
    stub = v1::ReformerService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  }
  ~GenServer() {
    generation->Shutdown();
    server->Shutdown(absl::Seconds(1));
  }

  std::shared_ptr<const ReformerModel> model;
  RealClock clock;
  PeakObserver observer;
  std::shared_ptr<MemoryBudget> budget;
  std::unique_ptr<GenerationService> generation;
  HealthState health;
  ServedModel served;
  ServiceEnv env;
  std::unique_ptr<GrpcServer> server;
  std::unique_ptr<v1::ReformerService::Stub> stub;
  std::string target;  // the address clients dial
};

struct Streamed {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<v1::FinishReason> reasons;  // per message
  uint64_t seed = 0;
  int64_t usage_generated = -1;
  int messages = 0;
};

Streamed Stream(v1::ReformerService::Stub* stub, const v1::GenerateRequest& req) {
  Streamed out;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  while (reader->Read(&m)) {
    ++out.messages;
    out.tokens.insert(out.tokens.end(), m.token_ids().begin(), m.token_ids().end());
    out.logprobs.insert(out.logprobs.end(), m.logprobs().begin(), m.logprobs().end());
    out.reasons.push_back(m.finish_reason());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      out.seed = m.seed();
      out.usage_generated = m.usage().generated_tokens();
    }
  }
  out.status = reader->Finish();
  return out;
}

v1::GenerateRequest IdsRequest(const std::vector<int32_t>& prompt, int32_t max_new) {
  v1::GenerateRequest r;
  for (int32_t id : prompt) r.mutable_prompt()->mutable_ids()->add_ids(id);
  r.set_max_new_tokens(max_new);
  return r;
}

std::vector<int32_t> FixturePrompt(const std::string& dir) {
  nlohmann::json in = nlohmann::json::parse(std::ifstream(dir + "/inputs.json"));
  std::vector<int32_t> prompt;
  for (const auto& t : in["input_ids"][0]) prompt.push_back(t.get<int32_t>());
  return prompt;
}

class GenerateFixtureTest : public ::testing::TestWithParam<std::string> {};

// Served greedy tokens = HF's (both modes) = the offline engine's; the finish reason is EOS exactly
// when HF stopped on EOS; the last message carries usage and every message before it is unfinished.
TEST_P(GenerateFixtureTest, ServedTokensEqualHuggingFaceAndOffline) {
  const std::string dir = FixtureDir(GetParam());
  GenServer s(dir);
  const std::vector<int32_t> prompt = FixturePrompt(dir);
  nlohmann::json e = nlohmann::json::parse(std::ifstream(dir + "/expected.json"));
  const int32_t max_new = e["max_new_tokens"].get<int32_t>();
  auto decoder = Decoder::Create(s.model, DecoderOptions{1});
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  for (const auto& [key, mode] : {std::pair{"greedy_cached", v1::DECODE_MODE_CACHED},
                                  std::pair{"greedy_no_cache", v1::DECODE_MODE_RECOMPUTE}}) {
    SCOPED_TRACE(key);
    std::vector<int32_t> want;
    for (const auto& t : e[key]["new_tokens"][0]) want.push_back(t.get<int32_t>());
    v1::GenerateRequest req = IdsRequest(prompt, max_new);
    req.set_mode(mode);
    const Streamed got = Stream(s.stub.get(), req);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.tokens, want);
    ASSERT_FALSE(got.reasons.empty());
    EXPECT_EQ(got.reasons.back(), e[key]["stopped_by_eos"].get<bool>() ? v1::FINISH_REASON_EOS
                                                                       : v1::FINISH_REASON_LENGTH);
    for (size_t i = 0; i + 1 < got.reasons.size(); ++i) EXPECT_EQ(got.reasons[i], v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_EQ(got.usage_generated, static_cast<int64_t>(want.size()));
    EXPECT_NE(got.seed, 0u);  // seed 0 asked: the server picked one and says which

    GenerationRequest offline;
    offline.prompt = prompt;
    offline.params.max_new_tokens = max_new;
    offline.params.mode = mode == v1::DECODE_MODE_CACHED ? DecodeMode::kCached : DecodeMode::kRecompute;
    offline.params.sampling.seed = 1;
    auto results = Generate(decoder->get(), *s.model, {&offline, 1});
    ASSERT_TRUE(results.ok()) << results.status();
    EXPECT_EQ(got.tokens, (*results)[0].tokens);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GenerateFixtureTest,
                         ::testing::Values("gen_a_short_prompt_crosses_lsh_chunk", "gen_b_enwik8_pattern_12layer_nh1",
                                           "gen_c_eos_stop_4hash_lookback2"));

// Different requests, each with its own prompt, length, mode, sampling and seed.
std::vector<v1::GenerateRequest> MixedRequests(int64_t vocab) {
  std::mt19937 rng(11);
  std::vector<v1::GenerateRequest> reqs;
  const int lengths[] = {5, 110, 1, 37, 64, 90, 20, 3};
  const int news[] = {60, 30, 80, 45, 70, 25, 100, 50};
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> prompt(static_cast<size_t>(lengths[i]));
    for (int32_t& id : prompt) id = static_cast<int32_t>(3 + rng() % (vocab - 3));
    v1::GenerateRequest r = IdsRequest(prompt, news[i]);
    r.set_mode(i % 3 == 2 ? v1::DECODE_MODE_RECOMPUTE : v1::DECODE_MODE_CACHED);
    if (i % 2 == 1) {
      r.set_temperature(0.7f + 0.1f * static_cast<float>(i));
      r.set_top_k(i == 3 ? 5 : 0);
      r.set_top_p(i == 5 ? 0.9f : 0.f);
    }
    r.set_seed(1000 + static_cast<uint64_t>(i));
    r.set_return_logprobs(true);
    r.set_ignore_eos(true);
    reqs.push_back(r);
  }
  return reqs;
}

// Same prompt, parameters and seed: bitwise the same tokens and logprobs alone or beside others.
TEST(GenerateTest, ConcurrentRequestsEqualEachAlone) {
  GenServer s(FixtureDir("gen_b_enwik8_pattern_12layer_nh1"));
  const std::vector<v1::GenerateRequest> reqs = MixedRequests(s.served.config.vocab_size);
  std::vector<Streamed> alone;
  for (const v1::GenerateRequest& r : reqs) {
    alone.push_back(Stream(s.stub.get(), r));
    ASSERT_TRUE(alone.back().status.ok()) << alone.back().status.error_message();
    ASSERT_EQ(alone.back().tokens.size(), static_cast<size_t>(r.max_new_tokens()));
    ASSERT_EQ(alone.back().logprobs.size(), alone.back().tokens.size());
  }
  EXPECT_EQ(s.observer.peak.load(), 1);
  // Concurrently (staggered starts, so sequences also join a running batch); repeated until the
  // service was seen stepping several sequences together, so the comparison tests something.
  for (int attempt = 0; attempt < 5 && s.observer.peak.load() < 3; ++attempt) {
    std::vector<Streamed> together(reqs.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < reqs.size(); ++i) {
      threads.emplace_back([&, i] {
        std::this_thread::sleep_for(std::chrono::milliseconds(3 * static_cast<int>(i)));
        together[i] = Stream(s.stub.get(), reqs[i]);
      });
    }
    for (std::thread& t : threads) t.join();
    for (size_t i = 0; i < reqs.size(); ++i) {
      SCOPED_TRACE(i);
      ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
      EXPECT_EQ(together[i].tokens, alone[i].tokens);
      ASSERT_EQ(together[i].logprobs.size(), alone[i].logprobs.size());
      EXPECT_EQ(0, std::memcmp(together[i].logprobs.data(), alone[i].logprobs.data(),
                               alone[i].logprobs.size() * sizeof(float)));  // bitwise
      EXPECT_EQ(together[i].seed, reqs[i].seed());
    }
  }
  EXPECT_GE(s.observer.peak.load(), 3) << "the concurrent requests never shared a decoding step";
  EXPECT_EQ(s.budget->reserved_bytes(MemoryKind::kCache), 0u);
}

TEST(GenerateTest, SeedZeroIsPickedAndReturned) {
  GenServer s(FixtureDir("gen_b_enwik8_pattern_12layer_nh1"));
  v1::GenerateRequest r = IdsRequest({5, 9, 17, 33, 8}, 40);
  r.set_temperature(1.5f);
  r.set_ignore_eos(true);
  const Streamed first = Stream(s.stub.get(), r), second = Stream(s.stub.get(), r);
  ASSERT_TRUE(first.status.ok() && second.status.ok());
  EXPECT_NE(first.seed, 0u);
  EXPECT_NE(first.seed, second.seed);  // 64 random bits each
  r.set_seed(first.seed);
  const Streamed again = Stream(s.stub.get(), r);
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.seed, first.seed);
  EXPECT_EQ(again.tokens, first.tokens);
}

void ExpectInvalid(v1::ReformerService::Stub* stub, const v1::GenerateRequest& r,
                   const std::vector<std::string>& words) {
  const Streamed got = Stream(stub, r);
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << got.status.error_message();
  EXPECT_EQ(got.messages, 0);
  for (const std::string& w : words) EXPECT_NE(got.status.error_message().find(w), std::string::npos)
      << got.status.error_message() << " lacks " << w;
}

TEST(GenerateTest, BadRequestsAreInvalidArgumentWithTheNumbers) {
  GenServer s(FixtureDir("gen_a_short_prompt_crosses_lsh_chunk"));  // context 64, vocab 40
  const std::vector<int32_t> p = {5, 6, 7};
  ExpectInvalid(s.stub.get(), IdsRequest(p, 0), {"0"});
  ExpectInvalid(s.stub.get(), IdsRequest(p, 62), {"3", "62", "64"});
  v1::GenerateRequest r = IdsRequest(p, 4);
  r.set_temperature(-0.5f);
  ExpectInvalid(s.stub.get(), r, {"-0.5"});
  r = IdsRequest(p, 4);
  r.set_top_k(-2);
  ExpectInvalid(s.stub.get(), r, {"-2"});
  r = IdsRequest(p, 4);
  r.set_top_p(1.5f);
  ExpectInvalid(s.stub.get(), r, {"1.5"});
  ExpectInvalid(s.stub.get(), IdsRequest({5, 40, 7}, 4), {"40"});
  r = IdsRequest({}, 4);
  r.mutable_prompt()->mutable_ids();
  ExpectInvalid(s.stub.get(), r, {"empty"});
  r = IdsRequest(p, 4);
  for (int i = 0; i < 17; ++i) r.add_stop("x");
  ExpectInvalid(s.stub.get(), r, {"17", "16"});
  r = IdsRequest(p, 4);
  r.add_stop(std::string(300, 'a'));
  ExpectInvalid(s.stub.get(), r, {"300", "256"});
  // The model has no tokenizer: a text prompt is refused (not tokenized by guesswork).
  r = IdsRequest({}, 4);
  r.mutable_prompt()->set_text("hello");
  ExpectInvalid(s.stub.get(), r, {"tokenizer"});
  EXPECT_EQ(s.generation->inflight(), 0);
}

// A client that cancels mid-stream ends its sequence: the service forgets it and its cache is free.
TEST(GenerateTest, CancelFreesTheSequenceAndItsCache) {
  GenerationOptions o;
  o.max_unsent = 2;
  GenServer s(FixtureDir("gen_b_enwik8_pattern_12layer_nh1"), o);
  v1::GenerateRequest r = IdsRequest({5, 9, 17}, 250);
  r.set_ignore_eos(true);
  r.set_mode(v1::DECODE_MODE_RECOMPUTE);  // slow steps: the cancel lands mid-stream
  grpc::ClientContext ctx;
  auto reader = s.stub->Generate(&ctx, r);
  v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  EXPECT_GT(s.budget->reserved_bytes(MemoryKind::kCache), 0u);
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The service ends the sequence before its next step; wait for that (no timing asserted).
  for (int i = 0; i < 2000 && s.generation->inflight() > 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(s.generation->inflight(), 0);
  EXPECT_EQ(s.budget->reserved_bytes(MemoryKind::kCache), 0u);
}

// Fairness: one client connection holds at most max_generate_streams_per_connection active Generate
// streams. One more on the same connection is RESOURCE_EXHAUSTED naming the limit and the flag;
// another connection is still served; a stream that ends frees its connection's slot.
TEST(GenerateTest, OneConnectionHoldsAtMostItsLimitOfStreams) {
  ServiceLimits limits;
  limits.max_generate_streams_per_connection = 2;
  GenServer s(FixtureDir("gen_b_enwik8_pattern_12layer_nh1"), {}, limits);
  v1::GenerateRequest slow = IdsRequest({5, 9, 17}, 250);
  slow.set_ignore_eos(true);
  slow.set_mode(v1::DECODE_MODE_RECOMPUTE);  // slow steps: both streams are still running below
  const v1::GenerateRequest quick = IdsRequest({5, 6}, 3);
  bool conclusive = false;
  for (int attempt = 0; attempt < 3 && !conclusive; ++attempt) {
    grpc::ClientContext c1, c2;
    auto r1 = s.stub->Generate(&c1, slow);
    auto r2 = s.stub->Generate(&c2, slow);
    v1::GenerateResponse m;
    ASSERT_TRUE(r1->Read(&m));
    ASSERT_TRUE(r2->Read(&m));  // both admitted: the connection's two slots are held
    const Streamed third = Stream(s.stub.get(), quick);
    // Another connection (its own subchannel, so not the first channel's TCP connection).
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto other = v1::ReformerService::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(s.server->port()), grpc::InsecureChannelCredentials(), args));
    const Streamed elsewhere = Stream(other.get(), quick);
    c1.TryCancel();
    c2.TryCancel();
    while (r1->Read(&m)) {
    }
    while (r2->Read(&m)) {
    }
    const bool held = r1->Finish().error_code() == grpc::StatusCode::CANCELLED &&
                      r2->Finish().error_code() == grpc::StatusCode::CANCELLED;
    EXPECT_TRUE(elsewhere.status.ok()) << elsewhere.status.error_message();
    if (!held && third.status.ok()) continue;  // a slow stream ended first: the machine was too fast
    conclusive = true;
    EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.status.error_message();
    EXPECT_NE(third.status.error_message().find("generate_max_streams_per_connection=2"), std::string::npos)
        << third.status.error_message();
  }
  EXPECT_TRUE(conclusive);
  // The cancelled streams' slots are released when their calls are done (no timing asserted).
  Streamed again;
  for (int i = 0; i < 400; ++i) {
    again = Stream(s.stub.get(), quick);
    if (again.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
}

// Every client of a Unix socket reports the same peer ("unix:"), so the cap counted them all as one
// connection: a second client was refused while the first held its one slot. Each connection has
// its own count now, and one connection is still capped.
TEST(GenerateTest, UnixSocketConnectionsEachHaveTheirOwnLimit) {
  ServiceLimits limits;
  limits.max_generate_streams_per_connection = 1;
  const std::string path = ::testing::TempDir() + "/generate_cap_" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  GenServer s(FixtureDir("gen_b_enwik8_pattern_12layer_nh1"), {}, limits, "unix:" + path);
  ASSERT_NE(s.server, nullptr);
  v1::GenerateRequest slow = IdsRequest({5, 9, 17}, 250);
  slow.set_ignore_eos(true);
  slow.set_mode(v1::DECODE_MODE_RECOMPUTE);
  const v1::GenerateRequest quick = IdsRequest({5, 6}, 3);
  bool conclusive = false;
  for (int attempt = 0; attempt < 3 && !conclusive; ++attempt) {
    grpc::ClientContext c1;
    auto r1 = s.stub->Generate(&c1, slow);
    v1::GenerateResponse m;
    ASSERT_TRUE(r1->Read(&m));  // the first connection's one slot is held
    const Streamed same = Stream(s.stub.get(), quick);
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // its own subchannel: a second connection
    auto other = v1::ReformerService::NewStub(
        grpc::CreateCustomChannel(s.target, grpc::InsecureChannelCredentials(), args));
    const Streamed elsewhere = Stream(other.get(), quick);
    c1.TryCancel();
    while (r1->Read(&m)) {
    }
    const bool held = r1->Finish().error_code() == grpc::StatusCode::CANCELLED;
    EXPECT_TRUE(elsewhere.status.ok()) << elsewhere.status.error_message();
    if (!held && same.status.ok()) continue;  // the slow stream ended first: the machine was too fast
    conclusive = true;
    EXPECT_EQ(same.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << same.status.error_message();
  }
  EXPECT_TRUE(conclusive);
  ::unlink(path.c_str());
}

// Draining: a new Generate is UNAVAILABLE.
TEST(GenerateTest, DrainingRefusesNewGenerations) {
  GenServer s(FixtureDir("gen_a_short_prompt_crosses_lsh_chunk"));
  s.health.StartDraining();
  const Streamed got = Stream(s.stub.get(), IdsRequest({5, 6}, 3));
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace reformer::serving
