// GenerationService on a real engine Decoder (tests/fixtures/generation/gen_a, tiny) with a fake
// clock and a scriptable sink: back-pressure (a client that does not read pauses its sequence, and is
// cancelled after the stalled timeout), deadlines and cancellation of running sequences, memory
// admission (waits for room, RESOURCE_EXHAUSTED when it can never fit, a cancelled sequence frees
// its cache at once), draining and shutdown. Nothing here asserts a duration: waits are for states.
#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "engine/model/decoder.h"
#include "engine/model/engine_api.h"
#include "gtest/gtest.h"
#include "server/batching/clock.h"
#include "server/batching/memory_budget.h"
#include "server/inference/generation_service.h"

namespace reformer::serving {
namespace {

std::string FixtureDir() {
  const char* src = std::getenv("REFORMER_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/fixtures/generation/gen_a_short_prompt_crosses_lsh_chunk";
}

// Records events; while `hold` is set every message stays unsent (a client that does not read).
class TestSink final : public GenerationSink {
 public:
  void OnEvent(GenerationEvent e) override {
    absl::MutexLock lock(&mu_);
    if (!e.last() && hold_) ++unsent_;
    events_.push_back(std::move(e));
  }
  int64_t unsent() const override {
    absl::MutexLock lock(&mu_);
    return unsent_;
  }
  void Read(bool hold) {  // the client takes everything (and keeps reading unless `hold`)
    absl::MutexLock lock(&mu_);
    unsent_ = 0;
    hold_ = hold;
  }
  int64_t events() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int64_t>(events_.size());
  }
  bool done() const {
    absl::MutexLock lock(&mu_);
    return !events_.empty() && events_.back().last();
  }
  GenerationEvent last() const {
    absl::MutexLock lock(&mu_);
    return events_.back();
  }
  int64_t tokens() const {
    absl::MutexLock lock(&mu_);
    int64_t n = 0;
    for (const GenerationEvent& e : events_) n += static_cast<int64_t>(e.token_ids.size());
    return n;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<GenerationEvent> events_;
  int64_t unsent_ = 0;
  bool hold_ = true;
};

// Waits (real time, generously) until `pred` holds; the tests assert the state, never the time.
bool WaitUntil(const std::function<bool()>& pred) {
  for (int i = 0; i < 12000; ++i) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return pred();
}

std::unique_ptr<GenerateRequest> Request(int64_t max_new, absl::Time deadline = absl::InfiniteFuture()) {
  auto r = std::make_unique<GenerateRequest>();
  r->prompt = {5, 6, 7, 8};
  r->max_new_tokens = max_new;
  r->ignore_eos = true;
  r->deadline = deadline;
  return r;
}

class GenerationServiceTest : public ::testing::Test {
 protected:
  void Start(int64_t budget_bytes, GenerationOptions o = {}) {
    auto loaded = ReformerModel::Load(FixtureDir());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    model_ = *loaded;
    budget_ = *MemoryBudget::Create(budget_bytes);
    o.threads_per_worker = 1;
    o.max_unsent = 3;
    o.stalled_timeout = absl::Seconds(5);
    options_ = o;
    auto g = GenerationService::Create(model_, o, budget_, &clock_, nullptr);
    ASSERT_TRUE(g.ok()) << g.status();
    service_ = *std::move(g);
  }
  void TearDown() override {
    if (service_) service_->Shutdown();
  }
  size_t StepBytes() const { return Decoder::EstimateStepBytes(model_->config(), options_.max_active, 1); }
  // What a Request(max_new)'s sequence reserves at its start (as generation_service.cc counts it).
  size_t SequenceBytes(int64_t max_new) const {
    const ReformerConfig& c = model_->config();
    SessionOptions so;
    so.num_threads = 1;
    so.workspace_budget_bytes = static_cast<size_t>(options_.workspace_budget_bytes);
    const int64_t n = 4, one[1] = {n};
    int64_t lsh = 0;
    for (AttnType t : c.attn_layers) lsh += t == AttnType::kLsh;
    const size_t buckets = static_cast<size_t>(lsh * c.num_attention_heads * c.num_hashes * c.PaddedLength(n)) * 4;
    return DecodeState::EstimateBytes(c, n, max_new, DecodeMode::kCached) +
           EstimatePeakWorkingBytes(*model_, one, 0, so) + buckets;
  }

  FakeClock clock_;
  std::shared_ptr<const ReformerModel> model_;
  std::shared_ptr<MemoryBudget> budget_;
  GenerationOptions options_;
  std::unique_ptr<GenerationService> service_;
};

// A client that reads nothing gets max_unsent messages, then its sequence pauses (keeping its
// cache); reading resumes it to the end. Paused beyond the stalled timeout it is cancelled.
TEST_F(GenerationServiceTest, UnreadStreamPausesThenResumesOrIsCancelled) {
  Start(int64_t{1} << 30);
  TestSink reader, stalled;
  ASSERT_TRUE(service_->Submit(Request(40), &reader).ok());
  ASSERT_TRUE(WaitUntil([&] { return reader.events() == 3; }));
  absl::SleepFor(absl::Milliseconds(100));  // give it room to misbehave
  EXPECT_EQ(reader.events(), 3);
  EXPECT_FALSE(reader.done());
  EXPECT_GT(budget_->reserved_bytes(MemoryKind::kCache), 0u);
  reader.Read(/*hold=*/false);
  service_->Wake();
  ASSERT_TRUE(WaitUntil([&] { return reader.done(); }));
  EXPECT_TRUE(reader.last().status.ok()) << reader.last().status;
  EXPECT_EQ(reader.last().finish, FinishReason::kLength);
  EXPECT_EQ(reader.tokens(), 40);

  ASSERT_TRUE(service_->Submit(Request(40), &stalled).ok());
  ASSERT_TRUE(WaitUntil([&] { return stalled.events() == 3; }));
  clock_.Advance(absl::Seconds(4));  // below the stalled timeout: still paused
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(stalled.done());
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(WaitUntil([&] { return stalled.done(); }));
  EXPECT_EQ(stalled.last().status.code(), absl::StatusCode::kResourceExhausted) << stalled.last().status;
  EXPECT_NE(stalled.last().status.message().find("--generate_stalled_timeout_s"), absl::string_view::npos)
      << stalled.last().status;
  EXPECT_EQ(service_->inflight(), 0);
  EXPECT_EQ(budget_->reserved_bytes(MemoryKind::kCache), 0u);
}

TEST_F(GenerationServiceTest, DeadlineAndCancellationEndRunningSequences) {
  Start(int64_t{1} << 30);
  TestSink late, cancelled;
  ASSERT_TRUE(service_->Submit(Request(40, clock_.Now() + absl::Seconds(1)), &late).ok());
  std::unique_ptr<GenerateRequest> r = Request(40);
  std::shared_ptr<std::atomic<bool>> flag = r->cancelled;
  ASSERT_TRUE(service_->Submit(std::move(r), &cancelled).ok());
  ASSERT_TRUE(WaitUntil([&] { return late.events() == 3 && cancelled.events() == 3; }));
  flag->store(true);
  ASSERT_TRUE(WaitUntil([&] { return cancelled.done(); }));
  EXPECT_EQ(cancelled.last().status.code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(late.done());
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(WaitUntil([&] { return late.done(); }));
  EXPECT_EQ(late.last().status.code(), absl::StatusCode::kDeadlineExceeded) << late.last().status;
  EXPECT_EQ(budget_->reserved_bytes(MemoryKind::kCache), 0u);
}

// The second sequence waits (it does not fail) until the first ends and frees its cache, then runs.
TEST_F(GenerationServiceTest, AdmissionWaitsForMemory) {
  GenerationOptions o;
  o.max_active = 4;
  options_ = o;
  auto loaded = ReformerModel::Load(FixtureDir());
  ASSERT_TRUE(loaded.ok());
  model_ = *loaded;
  // Room for one sequence in its prompt pass beside another's cache, but not for a second whole one.
  const size_t one = SequenceBytes(40);
  const size_t cache = DecodeState::EstimateBytes(model_->config(), 4, 40, DecodeMode::kCached);
  Start(static_cast<int64_t>(StepBytes() + cache + one - 1), o);
  TestSink first, second;
  ASSERT_TRUE(service_->Submit(Request(40), &first).ok());
  ASSERT_TRUE(WaitUntil([&] { return first.events() == 3; }));
  ASSERT_TRUE(service_->Submit(Request(40), &second).ok());
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(second.events(), 0);  // waiting for memory, not failed
  EXPECT_EQ(service_->inflight(), 2);
  first.Read(/*hold=*/false);
  second.Read(/*hold=*/false);
  service_->Wake();
  ASSERT_TRUE(WaitUntil([&] { return first.done() && second.done(); }));
  EXPECT_TRUE(second.last().status.ok()) << second.last().status;
  EXPECT_EQ(second.tokens(), 40);
  EXPECT_EQ(budget_->reserved_bytes(MemoryKind::kCache), 0u);
}

// A sequence that needs more than the budget less the workers' step buffers can never start:
// RESOURCE_EXHAUSTED at once, with the numbers (it would otherwise wait forever).
TEST_F(GenerationServiceTest, NeverFittingRequestIsResourceExhausted) {
  auto loaded = ReformerModel::Load(FixtureDir());
  ASSERT_TRUE(loaded.ok());
  model_ = *loaded;
  const size_t one = SequenceBytes(40);
  Start(static_cast<int64_t>(StepBytes() + one - 1));
  TestSink never, fits;
  absl::Status s = service_->Submit(Request(40), &never);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find(std::to_string(one)), std::string::npos) << s;
  EXPECT_NE(s.message().find(std::to_string(budget_->total_bytes())), std::string::npos) << s;
  EXPECT_EQ(never.events(), 0);
  EXPECT_EQ(service_->inflight(), 0);
  fits.Read(/*hold=*/false);
  ASSERT_TRUE(service_->Submit(Request(10), &fits).ok());  // a smaller cache fits and runs
  ASSERT_TRUE(WaitUntil([&] { return fits.done(); }));
  EXPECT_TRUE(fits.last().status.ok()) << fits.last().status;
}

TEST_F(GenerationServiceTest, DrainingRefusesNewAndShutdownEndsRunningStreams) {
  Start(int64_t{1} << 30);
  TestSink running, refused;
  ASSERT_TRUE(service_->Submit(Request(40), &running).ok());
  ASSERT_TRUE(WaitUntil([&] { return running.events() == 3; }));
  service_->StartDraining();
  EXPECT_EQ(service_->Submit(Request(4), &refused).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(service_->WaitIdle(absl::Milliseconds(20)));  // a paused stream is still running
  service_->Shutdown();
  ASSERT_TRUE(running.done());
  EXPECT_EQ(running.last().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(refused.events(), 0);
  EXPECT_EQ(budget_->reserved_bytes(MemoryKind::kCache), 0u);
}

TEST_F(GenerationServiceTest, InvalidRequestsNeverReachTheSink) {
  Start(int64_t{1} << 30);
  TestSink sink;
  EXPECT_EQ(service_->Submit(Request(0), &sink).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->Submit(Request(61), &sink).code(), absl::StatusCode::kInvalidArgument);  // 4 + 61 > 64
  EXPECT_EQ(sink.events(), 0);
  EXPECT_EQ(service_->inflight(), 0);
}

}  // namespace
}  // namespace reformer::serving
