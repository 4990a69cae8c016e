// InferenceService threading, cancellation, deadlines and draining on fake runners (no model).
// The fake "layers" block on a gate the test opens, so the tests do not depend on timing except for
// generous upper bounds on waits.
#include <atomic>
#include <map>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batching/clock.h"
#include "server/inference/document_runner.h"
#include "server/inference/inference_service.h"

namespace reformer::serving {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);  // upper bound for anything that should happen

// Shared between the test and the runners of one service.
struct FakeWorld {
  absl::Mutex mu;
  // Documents longer than this run "layer by layer" until `release_long` (checking cancel per layer).
  int64_t gate_tokens ABSL_GUARDED_BY(mu) = 1 << 30;
  bool release_long ABSL_GUARDED_BY(mu) = false;
  int long_started ABSL_GUARDED_BY(mu) = 0;
  int long_stopped ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::vector<int64_t>> batches ABSL_GUARDED_BY(mu);
  std::map<int32_t, absl::Time> first_token_started ABSL_GUARDED_BY(mu);
  int idle_releases ABSL_GUARDED_BY(mu) = 0;  // DocumentRunner::ReleaseIdleMemory calls
  size_t retain_bytes ABSL_GUARDED_BY(mu) = 0;  // what a runner keeps between runs (retained_bytes)
  std::thread::id run_thread ABSL_GUARDED_BY(mu), release_thread ABSL_GUARDED_BY(mu);
};

class FakeRunner : public DocumentRunner {
 public:
  explicit FakeRunner(FakeWorld* world) : world_(world) {}
  absl::Status Run(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                   absl::Span<const OutputView> dst, const CancelFn& cancel) override {
    bool gated = false;
    {
      absl::MutexLock lock(&world_->mu);
      std::vector<int64_t> lengths;
      for (auto doc : documents) {
        lengths.push_back(static_cast<int64_t>(doc.size()));
        world_->first_token_started.emplace(doc[0], absl::Now());
        if (static_cast<int64_t>(doc.size()) > world_->gate_tokens) gated = true;
      }
      world_->batches.push_back(lengths);
      world_->run_thread = std::this_thread::get_id();
      if (gated) ++world_->long_started;
    }
    if (gated) {
      while (true) {  // one iteration = one "layer"
        if (cancel && cancel()) {
          absl::MutexLock lock(&world_->mu);
          ++world_->long_stopped;
          return absl::CancelledError("stopped by cancel callback");
        }
        absl::MutexLock lock(&world_->mu);
        auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(world_->mu) { return world_->release_long; };
        if (world_->mu.AwaitWithTimeout(absl::Condition(&released), absl::Milliseconds(1))) break;
      }
    }
    // The fake's outputs: embedding[0] = sum of the ids (hidden width 1), token_logprobs = the ids.
    for (size_t d = 0; d < documents.size(); ++d) {
      auto doc = documents[d];
      if (outputs & kOutputEmbedding) {
        dst[d].embedding[0] = static_cast<float>(std::accumulate(doc.begin(), doc.end(), int64_t{0}));
      }
      if (outputs & kOutputTokenLogprobs) std::copy(doc.begin(), doc.end(), dst[d].token_logprobs);
    }
    high_water_ = 1000;
    absl::MutexLock lock(&world_->mu);
    retained_ = world_->retain_bytes;
    return absl::OkStatus();
  }
  size_t workspace_high_water_bytes() const override { return high_water_; }
  void reset_workspace_high_water() override { high_water_ = 0; }
  size_t retained_bytes() const override { return retained_; }
  void ReleaseIdleMemory() override {
    retained_ = 0;
    absl::MutexLock lock(&world_->mu);
    ++world_->idle_releases;
    world_->release_thread = std::this_thread::get_id();
  }

 private:
  FakeWorld* world_;
  size_t high_water_ = 0;
  size_t retained_ = 0;
};

class CountingObserver : public InferenceObserver {
 public:
  void OnRejected(const std::string& reason) override {
    absl::MutexLock lock(&mu_);
    rejected_[reason]++;
  }
  void OnBatch(int64_t, int64_t tokens) override {
    absl::MutexLock lock(&mu_);
    batches_++;
    batch_tokens_ += tokens;
  }
  void OnRequestDone(const std::string& method, const absl::Status& status, int64_t, double, double) override {
    absl::MutexLock lock(&mu_);
    done_[method + ":" + absl::StatusCodeToString(status.code())]++;
  }
  void OnWorkspaceBytes(int, size_t bytes) override {
    absl::MutexLock lock(&mu_);
    workspace_ = bytes;
  }
  void OnInflightChanged(int64_t inflight) override {
    absl::MutexLock lock(&mu_);
    inflight_ = inflight;
  }
  void OnMemoryBudget(size_t total) override {
    absl::MutexLock lock(&mu_);
    memory_total_ = total;
  }
  void OnMemoryReserved(const std::string& kind, size_t bytes) override {
    absl::MutexLock lock(&mu_);
    memory_[kind] = bytes;
  }
  size_t memory_total_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, size_t> memory_ ABSL_GUARDED_BY(mu_);
  absl::Mutex mu_;
  std::map<std::string, int> rejected_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> done_ ABSL_GUARDED_BY(mu_);
  int batches_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t batch_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  size_t workspace_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = -1;
};

// Collects answers; each id must be answered exactly once.
class Answers {
 public:
  DoneCallback Callback(int id) {
    return [this, id](InferenceResult r) {
      absl::MutexLock lock(&mu_);
      count_[id]++;
      results_[id] = std::move(r);
    };
  }
  bool WaitFor(int id, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto has = [this, id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_.count(id) > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&has), timeout);
  }
  bool WaitForCount(size_t n, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto has = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&has), timeout);
  }
  // The result stays stored (with its output memory) until Take().
  const InferenceResult& Get(int id) {
    absl::MutexLock lock(&mu_);
    return results_[id];
  }
  InferenceResult Take(int id) {
    absl::MutexLock lock(&mu_);
    return std::move(results_[id]);
  }
  int Count(int id) {
    absl::MutexLock lock(&mu_);
    return count_[id];
  }
  size_t Size() {
    absl::MutexLock lock(&mu_);
    return count_.size();
  }

 private:
  absl::Mutex mu_;
  std::map<int, int> count_ ABSL_GUARDED_BY(mu_);
  std::map<int, InferenceResult> results_ ABSL_GUARDED_BY(mu_);
};

// A FakeClock that also counts the calls made on one thread. An idle worker reads the clock a
// few times per poll (every 10 ms of real time, or sooner when woken); once it has made `n` more
// calls after the test changed the time, it has run its idle check at the new time (and acted on
// it) at least once. Here n = kPolls = 12 covers two full polls with room to spare.
class WatchedFakeClock final : public Clock {
 public:
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    if (std::this_thread::get_id() == watched_) ++watched_calls_;
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void WatchThisThread() {
    absl::MutexLock lock(&mu_);
    watched_ = std::this_thread::get_id();
  }
  // Waits (real time, bounded) until the watched thread has called Now() `n` more times.
  bool WaitForWatchedCalls(int64_t n) {
    absl::MutexLock lock(&mu_);
    const int64_t target = watched_calls_ + n;
    auto reached = [this, target]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return watched_calls_ >= target; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kWait);
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::UnixEpoch() + absl::Hours(1);
  std::thread::id watched_ ABSL_GUARDED_BY(mu_);
  mutable int64_t watched_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

class InferenceServiceTest : public ::testing::Test {
 protected:
  InferenceOptions Options(int workers) {
    InferenceOptions o;
    o.workers = workers;
    o.max_batch_tokens = 65536;
    o.max_batch_size = 8;
    o.max_queue_delay = absl::Milliseconds(1);
    o.long_batch_tokens = 4096;
    return o;
  }
  void Start(const InferenceOptions& options) {
    ModelLimits limits{65536, 1000, 1};
    auto s = CreateInferenceServiceWithRunners(
        nullptr, limits, options, &clock_, &observer_,
        [this](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
          return std::unique_ptr<DocumentRunner>(new FakeRunner(&world_));
        },
        ServiceMemory{});
    ASSERT_TRUE(s.ok()) << s.status();
    service_ = std::move(s).value();
  }
  // Outputs embedding + token_logprobs; `lp_only`: token_logprobs only, so that the response holds
  // exactly 4 bytes per token (what the memory tests' budgets are computed from).
  std::unique_ptr<InferenceRequest> Request(std::vector<std::vector<int32_t>> docs, int first_token = -1,
                                            bool lp_only = false) {
    auto r = std::make_unique<InferenceRequest>();
    if (first_token >= 0) docs[0][0] = first_token;
    for (const auto& d : docs) r->documents.Append(d);
    r->dims = {1000, 1, 0};  // the fake runner's embedding has one value
    r->outputs = {OutputKind::kEmbedding, OutputKind::kTokenLogprobs};
    if (lp_only) r->outputs = {OutputKind::kTokenLogprobs};
    r->method = "ModelInfer";
    return r;
  }
  // Document d's embedding and token_logprobs, as written into the request's response buffers.
  static float Embedding(const InferenceResult& r, int64_t d) { return r.request->buffer(0).as<float>()[d]; }
  static const float* TokenLogprobs(const InferenceResult& r, int64_t d) {
    return r.request->buffer(r.request->num_buffers() - 1).as<float>() + r.request->documents.offset(d);
  }
  static std::vector<int32_t> Doc(int64_t n, int32_t value = 1) { return std::vector<int32_t>(n, value); }
  void ReleaseLong() {
    absl::MutexLock lock(&world_.mu);
    world_.release_long = true;
  }
  bool WaitLongStarted(int n, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&world_.mu);
    auto started = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(world_.mu) { return world_.long_started >= n; };
    return world_.mu.AwaitWithTimeout(absl::Condition(&started), timeout);
  }

  RealClock clock_;
  WatchedFakeClock fake_clock_;  // for tests that drive time by hand
  FakeWorld world_;
  CountingObserver observer_;
  Answers answers_;
  std::unique_ptr<InferenceService> service_;  // destroyed first
};

TEST_F(InferenceServiceTest, ConcurrentRequestsAllAnsweredWithTheirOwnOutputs) {
  Start(Options(2));
  constexpr int kThreads = 4, kPerThread = 25;
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([this, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int id = t * kPerThread + i;
        // Two documents with distinct contents: outputs must come back in request order.
        auto req = Request({Doc(10 + id % 7, id % 100 + 1), Doc(50 + id, 3)});
        ASSERT_TRUE(service_->Submit(std::move(req), answers_.Callback(id)).ok());
      }
    });
  }
  for (auto& c : clients) c.join();
  ASSERT_TRUE(answers_.WaitForCount(kThreads * kPerThread));
  for (int id = 0; id < kThreads * kPerThread; ++id) {
    const InferenceResult& r = answers_.Get(id);
    ASSERT_TRUE(r.status.ok()) << id << " " << r.status;
    ASSERT_EQ(r.request->num_buffers(), 2u);  // only what was asked
    EXPECT_EQ(Embedding(r, 0), static_cast<float>((10 + id % 7) * (id % 100 + 1))) << id;
    EXPECT_EQ(Embedding(r, 1), static_cast<float>((50 + id) * 3)) << id;
    EXPECT_EQ(r.request->documents.length(1), 50 + id);
    EXPECT_EQ(TokenLogprobs(r, 1)[50 + id - 1], 3.f) << id;
    EXPECT_EQ(r.tokens, 10 + id % 7 + 50 + id);
    EXPECT_EQ(answers_.Count(id), 1);
  }
  EXPECT_TRUE(service_->WaitIdle(kWait));
  absl::MutexLock lock(&observer_.mu_);
  EXPECT_EQ(observer_.done_["ModelInfer:OK"], kThreads * kPerThread);
  EXPECT_GT(observer_.batches_, 0);
  EXPECT_EQ(observer_.inflight_, 0);
  EXPECT_EQ(observer_.workspace_, 1000u);
}

TEST_F(InferenceServiceTest, InternalRequestsAreAnsweredButNotReportedToTheObserver) {
  Start(Options(1));
  auto warm = Request({Doc(64, 2)});
  warm->method = "warmup";
  warm->internal = true;
  ASSERT_TRUE(service_->Submit(std::move(warm), answers_.Callback(1)).ok());
  ASSERT_TRUE(answers_.WaitForCount(1));
  EXPECT_TRUE(answers_.Get(1).status.ok());
  EXPECT_EQ(Embedding(answers_.Get(1), 0), 128.f);
  ASSERT_TRUE(service_->WaitIdle(kWait));
  {
    absl::MutexLock lock(&observer_.mu_);
    EXPECT_EQ(observer_.batches_, 0);
    EXPECT_EQ(observer_.batch_tokens_, 0);
    EXPECT_TRUE(observer_.done_.empty());
  }
  // An ordinary request afterwards is reported as usual.
  ASSERT_TRUE(service_->Submit(Request({Doc(10, 3)}), answers_.Callback(2)).ok());
  ASSERT_TRUE(answers_.WaitForCount(2));
  ASSERT_TRUE(service_->WaitIdle(kWait));
  absl::MutexLock lock(&observer_.mu_);
  EXPECT_EQ(observer_.batches_, 1);
  EXPECT_EQ(observer_.batch_tokens_, 10);
  EXPECT_EQ(observer_.done_["ModelInfer:OK"], 1);
  EXPECT_EQ(observer_.done_.count("warmup:OK"), 0u);
}

TEST_F(InferenceServiceTest, RejectsInvalidRequestsSynchronously) {
  Start(Options(1));
  absl::Status s = service_->Submit(Request({Doc(5), {1, 2, 1000}}), answers_.Callback(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("document 1 position 2: token id 1000 outside [0, 1000)"));
  s = service_->Submit(Request({Doc(5), {}}), answers_.Callback(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = service_->Submit(Request({Doc(70000)}), answers_.Callback(3));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("70000 tokens"));
  EXPECT_THAT(s.message(), HasSubstr("65536"));
  service_->Shutdown();
  EXPECT_EQ(answers_.Size(), 0u);  // no callback for a rejected request
  absl::MutexLock lock(&observer_.mu_);
  EXPECT_EQ(observer_.rejected_["invalid"], 3);
}

TEST_F(InferenceServiceTest, CancelStopsRunningBatchAndNextRequestStarts) {
  Start(Options(1));
  {
    absl::MutexLock lock(&world_.mu);
    world_.gate_tokens = 8000;
  }
  auto long_req = Request({Doc(16384)}, /*first_token=*/7);
  auto flag = long_req->cancelled;
  ASSERT_TRUE(service_->Submit(std::move(long_req), answers_.Callback(1)).ok());
  ASSERT_TRUE(WaitLongStarted(1));
  ASSERT_TRUE(service_->Submit(Request({Doc(512)}, /*first_token=*/9), answers_.Callback(2)).ok());
  const absl::Time cancelled_at = absl::Now();
  flag->store(true);
  ASSERT_TRUE(answers_.WaitFor(2));
  EXPECT_EQ(answers_.Get(1).status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(answers_.Get(2).status.ok());
  absl::MutexLock lock(&world_.mu);
  EXPECT_EQ(world_.long_stopped, 1);
  // The short request started shortly after the cancel (one fake layer is 1 ms; the bound only allows
  // for scheduling noise on a loaded machine: without the cancel the long batch would never end).
  EXPECT_LT(world_.first_token_started[9] - cancelled_at, absl::Seconds(2));
}

TEST_F(InferenceServiceTest, PartiallyCancelledBatchKeepsRunningForTheOthers) {
  InferenceOptions o = Options(1);
  o.max_batch_size = 2;                     // the batch closes (full) when the second request arrives
  o.max_queue_delay = absl::Seconds(10);    // and not before: both requests land in one batch
  Start(o);
  {
    absl::MutexLock lock(&world_.mu);
    world_.gate_tokens = 100;
  }
  auto a = Request({Doc(200)});
  auto flag = a->cancelled;
  ASSERT_TRUE(service_->Submit(std::move(a), answers_.Callback(1)).ok());
  ASSERT_TRUE(service_->Submit(Request({Doc(210)}), answers_.Callback(2)).ok());
  ASSERT_TRUE(WaitLongStarted(1));
  flag->store(true);
  absl::SleepFor(absl::Milliseconds(20));  // several fake layers: the batch must not stop
  ReleaseLong();
  ASSERT_TRUE(answers_.WaitFor(1));
  ASSERT_TRUE(answers_.WaitFor(2));
  EXPECT_EQ(answers_.Get(1).status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(answers_.Get(2).status.ok());
  absl::MutexLock lock(&world_.mu);
  EXPECT_EQ(world_.long_stopped, 0);
  ASSERT_EQ(world_.batches.size(), 1u);
  EXPECT_EQ(world_.batches[0].size(), 2u);
}

TEST_F(InferenceServiceTest, QueuedRequestExpiresWhileWorkersAreBusy) {
  Start(Options(1));
  {
    absl::MutexLock lock(&world_.mu);
    world_.gate_tokens = 1000;
  }
  ASSERT_TRUE(service_->Submit(Request({Doc(2000)}), answers_.Callback(1)).ok());
  ASSERT_TRUE(WaitLongStarted(1));
  auto r = Request({Doc(10)}, /*first_token=*/5);
  r->deadline = absl::Now() + absl::Milliseconds(30);
  ASSERT_TRUE(service_->Submit(std::move(r), answers_.Callback(2)).ok());
  ASSERT_TRUE(answers_.WaitFor(2));  // answered by the sweeper while the only worker is busy
  EXPECT_EQ(answers_.Get(2).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(answers_.Get(2).compute_seconds, 0);
  ReleaseLong();
  ASSERT_TRUE(answers_.WaitFor(1));
  EXPECT_TRUE(answers_.Get(1).status.ok());
  absl::MutexLock lock(&world_.mu);
  EXPECT_EQ(world_.first_token_started.count(5), 0u);  // never computed
}

TEST_F(InferenceServiceTest, ShortRequestsCompleteWhileALongDocumentRuns) {
  Start(Options(2));
  {
    absl::MutexLock lock(&world_.mu);
    world_.gate_tokens = 60000;
  }
  ASSERT_TRUE(service_->Submit(Request({Doc(65536)}), answers_.Callback(0)).ok());
  ASSERT_TRUE(WaitLongStarted(1));
  // Another long one must not take the second worker.
  ASSERT_TRUE(service_->Submit(Request({Doc(65000)}), answers_.Callback(1)).ok());
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(service_->Submit(Request({Doc(512)}), answers_.Callback(100 + i)).ok());
    ASSERT_TRUE(answers_.WaitFor(100 + i)) << i;
    EXPECT_TRUE(answers_.Get(100 + i).status.ok());
  }
  EXPECT_EQ(answers_.Count(0), 0);
  EXPECT_EQ(answers_.Count(1), 0);
  ReleaseLong();
  ASSERT_TRUE(answers_.WaitFor(0));
  ASSERT_TRUE(answers_.WaitFor(1));
  EXPECT_TRUE(service_->WaitIdle(kWait));
}

TEST_F(InferenceServiceTest, DrainThenShutdownAnswersEverythingOnce) {
  Start(Options(1));
  {
    absl::MutexLock lock(&world_.mu);
    world_.gate_tokens = 1000;
  }
  ASSERT_TRUE(service_->Submit(Request({Doc(2000)}), answers_.Callback(1)).ok());
  ASSERT_TRUE(WaitLongStarted(1));
  for (int i = 2; i <= 6; ++i) ASSERT_TRUE(service_->Submit(Request({Doc(10)}), answers_.Callback(i)).ok());
  service_->StartDraining();
  absl::Status s = service_->Submit(Request({Doc(10)}), answers_.Callback(99));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(service_->WaitIdle(absl::Milliseconds(20)));  // the long one is still running
  service_->Shutdown();
  ASSERT_EQ(answers_.Size(), 6u);
  for (int i = 1; i <= 6; ++i) {
    EXPECT_EQ(answers_.Count(i), 1) << i;
    EXPECT_EQ(answers_.Get(i).status.code(), absl::StatusCode::kUnavailable) << i;
  }
  EXPECT_EQ(answers_.Count(99), 0);
  EXPECT_TRUE(service_->WaitIdle(absl::ZeroDuration()));
  service_->Shutdown();  // idempotent
  absl::MutexLock lock(&observer_.mu_);
  EXPECT_EQ(observer_.rejected_["draining"], 1);
}

TEST_F(InferenceServiceTest, DrainLetsQueuedWorkFinish) {
  Start(Options(2));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(service_->Submit(Request({Doc(100)}), answers_.Callback(i)).ok());
  service_->StartDraining();
  EXPECT_TRUE(service_->WaitIdle(kWait));
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(answers_.Get(i).status.ok()) << i;
}

// A worker that has been idle for 2 s (on the service's clock) after running a batch calls
// ReleaseIdleMemory once, on its own thread, and not again until it has run another batch.
TEST_F(InferenceServiceTest, IdleWorkerReleasesMemoryOnceAfterTwoSecondsOnTheClock) {
  WatchedFakeClock& clock = fake_clock_;  // outlives service_
  InferenceOptions o = Options(1);
  o.max_queue_delay = absl::ZeroDuration();  // batches form at once: the fake clock need not move
  auto created = CreateInferenceServiceWithRunners(
      nullptr, ModelLimits{65536, 1000, 1}, o, &clock, &observer_,
      [this, &clock](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
        clock.WatchThisThread();  // the factory runs on the worker thread
        return std::unique_ptr<DocumentRunner>(new FakeRunner(&world_));
      },
      ServiceMemory{});
  ASSERT_TRUE(created.ok()) << created.status();
  service_ = std::move(created).value();
  {
    absl::MutexLock lock(&world_.mu);
    world_.retain_bytes = 1000;  // the session keeps 1000 bytes between runs
  }
  const std::shared_ptr<MemoryBudget> budget = service_->memory_budget();
  constexpr int64_t kPolls = 12;  // worker clock reads: at least two full idle polls
  auto releases = [this] {
    absl::MutexLock lock(&world_.mu);
    return world_.idle_releases;
  };

  // Idle from the start, but nothing was run: nothing to release, however long it idles.
  ASSERT_TRUE(clock.WaitForWatchedCalls(kPolls));
  clock.Advance(absl::Hours(1));
  ASSERT_TRUE(clock.WaitForWatchedCalls(kPolls));
  EXPECT_EQ(releases(), 0);

  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE(round);
    ASSERT_TRUE(service_->Submit(Request({Doc(100)}), answers_.Callback(round)).ok());
    ASSERT_TRUE(answers_.WaitFor(round));
    ASSERT_TRUE(answers_.Get(round).status.ok());
    answers_.Take(round);  // the response is "sent": its outputs (none here) are released
    EXPECT_EQ(budget->reserved_bytes(MemoryKind::kWorking), 1000u);  // held for the idle session
    // The worker has gone idle at the current fake time.
    ASSERT_TRUE(clock.WaitForWatchedCalls(kPolls));
    EXPECT_EQ(releases(), round - 1);
    clock.Advance(absl::Seconds(2) - absl::Milliseconds(1));
    ASSERT_TRUE(clock.WaitForWatchedCalls(kPolls));
    EXPECT_EQ(releases(), round - 1) << "released before 2 s of idleness";
    clock.Advance(absl::Milliseconds(1));  // exactly 2 s idle
    ASSERT_TRUE(clock.WaitForWatchedCalls(kPolls));
    // Checked after a few polls, not after a real-time wait: idleness is measured on the clock.
    EXPECT_EQ(releases(), round) << "not released after 2 s of idleness on the service's clock";
    EXPECT_EQ(budget->reserved_bytes(), 0u);
    // Once only: more idle time does not release again.
    clock.Advance(absl::Minutes(5));
    ASSERT_TRUE(clock.WaitForWatchedCalls(kPolls));
    EXPECT_EQ(releases(), round);
  }
  service_->Shutdown();
  absl::MutexLock lock(&world_.mu);
  EXPECT_EQ(world_.idle_releases, 2);
  EXPECT_EQ(world_.release_thread, world_.run_thread);  // the runner's own (worker) thread
}

TEST_F(InferenceServiceTest, RunnerCreationFailureFailsCreate) {
  ModelLimits limits{1024, 100, 1};
  std::atomic<int> calls{0};
  auto s = CreateInferenceServiceWithRunners(
      nullptr, limits, Options(2), &clock_, nullptr,
      [&calls](int worker) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
        ++calls;
        if (worker == 1) return absl::ResourceExhaustedError("no memory for the session");
        return std::unique_ptr<DocumentRunner>(nullptr);
      },
      ServiceMemory{});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.status().message(), HasSubstr("worker 1"));
  EXPECT_EQ(calls.load(), 2);
  InferenceOptions bad = Options(0);
  EXPECT_EQ(bad.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// A negative --memory_budget_bytes used to wrap to SIZE_MAX (no bound); zero meant nothing either.
TEST_F(InferenceServiceTest, NonsenseOptionsAreRejectedNamingTheFlag) {
  auto expect = [](InferenceOptions o, const char* flag) {
    absl::Status s = o.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << flag;
    EXPECT_THAT(s.message(), HasSubstr(flag));
  };
  InferenceOptions o;
  o.memory_budget_bytes = -1;
  expect(o, "--memory_budget_bytes");
  o.memory_budget_bytes = static_cast<int64_t>(static_cast<size_t>(int64_t{-5}));  // as main.cc casts
  expect(o, "--memory_budget_bytes");
  o = InferenceOptions();
  o.memory_budget_bytes = 0;
  expect(o, "--memory_budget_bytes");
  o = InferenceOptions();
  o.workspace_budget_bytes = -1;
  expect(o, "--workspace_budget_bytes");
  o = InferenceOptions();
  o.max_batch_size = 0;
  expect(o, "--max_batch_size");
  o = InferenceOptions();
  o.length_ratio = 0.5;
  expect(o, "--batch_length_ratio");
  o = InferenceOptions();
  o.max_queue_delay = -absl::Milliseconds(1);
  expect(o, "--max_queue_delay_ms");
  EXPECT_TRUE(InferenceOptions().Validate().ok());
  o = InferenceOptions();
  o.memory_budget_bytes = -1;
  auto created = CreateInferenceServiceWithRunners(
      nullptr, ModelLimits{1024, 100, 1}, o, &clock_, nullptr,
      [this](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
        return std::unique_ptr<DocumentRunner>(new FakeRunner(&world_));
      },
      ServiceMemory{});
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
}

// One budget for all workers: two workers, room for one long batch's working memory at a time; the
// second long request waits (it is not refused) and runs when the first completes. Outputs come
// back with the result and hold their bytes until the caller drops them.
TEST_F(InferenceServiceTest, WorkersShareOneMemoryBudget) {
  InferenceOptions o = Options(2);
  o.long_batch_tokens = 0;  // no reservation: both workers could take a long batch
  o.memory_budget_bytes = 150000;
  ServiceMemory memory;
  memory.working = [](absl::Span<const int64_t> lengths, uint32_t) {
    size_t n = 0;
    for (int64_t l : lengths) n += static_cast<size_t>(l);
    return 50 * n;  // 100 KB for 2000 tokens
  };
  memory.output = [](int64_t length, uint32_t) { return static_cast<size_t>(4 * length); };
  auto created = CreateInferenceServiceWithRunners(
      nullptr, ModelLimits{65536, 1000, 1}, o, &clock_, &observer_,
      [this](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
        return std::unique_ptr<DocumentRunner>(new FakeRunner(&world_));
      },
      std::move(memory));
  ASSERT_TRUE(created.ok()) << created.status();
  service_ = std::move(created).value();
  std::shared_ptr<MemoryBudget> budget = service_->memory_budget();
  ASSERT_NE(budget, nullptr);
  EXPECT_EQ(budget->total_bytes(), 150000u);
  {
    absl::MutexLock lock(&world_.mu);
    world_.gate_tokens = 1000;
  }
  ASSERT_TRUE(service_->Submit(Request({Doc(2000)}, 7, true), answers_.Callback(1)).ok());
  ASSERT_TRUE(WaitLongStarted(1));
  ASSERT_TRUE(service_->Submit(Request({Doc(2000)}, 8, true), answers_.Callback(2)).ok());
  // 2 x 108 KB > 150 KB: it waits. (A bounded real-time wait: this can only pass falsely, never fail
  // falsely, on a slow machine.)
  EXPECT_FALSE(WaitLongStarted(2, absl::Milliseconds(100)));
  EXPECT_EQ(answers_.Size(), 0u);
  EXPECT_EQ(budget->reserved_bytes(), 100000u + 8000u);
  ReleaseLong();
  ASSERT_TRUE(answers_.WaitFor(1));
  ASSERT_TRUE(answers_.WaitFor(2));
  EXPECT_TRUE(answers_.Get(2).status.ok());
  EXPECT_EQ(answers_.Get(1).output_memory.bytes(), 8000u);
  EXPECT_EQ(answers_.Get(1).output_memory.kind(), MemoryKind::kOutput);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kOutput), 16000u);  // both responses "unsent"
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kWorking), 0u);
  // Outputs held by unsent responses keep the next request waiting until they are dropped.
  ASSERT_TRUE(service_->Submit(Request({Doc(2700)}, 9, true), answers_.Callback(3)).ok());  // 135 KB + 10.8 KB
  EXPECT_FALSE(answers_.WaitFor(3, absl::Milliseconds(100)));
  answers_.Take(1);
  answers_.Take(2);  // "sent": the release wakes a worker
  ASSERT_TRUE(answers_.WaitFor(3));
  EXPECT_TRUE(answers_.Get(3).status.ok());
  answers_.Take(3);
  EXPECT_EQ(budget->reserved_bytes(), 0u);
  ASSERT_TRUE(service_->WaitIdle(kWait));
  absl::MutexLock lock(&observer_.mu_);
  EXPECT_EQ(observer_.memory_total_, 150000u);
  EXPECT_EQ(observer_.memory_["output"], 0u);
  EXPECT_EQ(observer_.memory_["working"], 0u);
  EXPECT_EQ(observer_.memory_.count("cache"), 1u);
}

// One request of 20,000 one-token documents (issue 11): answered once, every document in its place,
// in full batches (the scheduler's per-batch work is bounded in batching_scheduler_test).
TEST_F(InferenceServiceTest, OneRequestOfManyOneTokenDocuments) {
  InferenceOptions o = Options(2);
  o.max_batch_size = 32;
  o.max_tokens_per_request = 20000;
  Start(o);
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < 20000; ++i) docs.push_back({i % 1000});
  ASSERT_TRUE(service_->Submit(Request(std::move(docs)), answers_.Callback(1)).ok());
  ASSERT_TRUE(answers_.WaitFor(1));
  const InferenceResult& r = answers_.Get(1);
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.request->documents.size(), 20000);
  for (int i = 0; i < 20000; ++i) {
    ASSERT_EQ(r.request->documents.length(i), 1) << i;
    ASSERT_EQ(TokenLogprobs(r, i)[0], static_cast<float>(i % 1000)) << i;
    ASSERT_EQ(Embedding(r, i), static_cast<float>(i % 1000)) << i;
  }
  EXPECT_EQ(r.tokens, 20000);
  EXPECT_EQ(answers_.Count(1), 1);
  absl::MutexLock lock(&world_.mu);
  int64_t documents = 0;
  for (const auto& batch : world_.batches) {
    EXPECT_LE(batch.size(), 32u);
    documents += static_cast<int64_t>(batch.size());
  }
  EXPECT_EQ(documents, 20000);
  EXPECT_GE(world_.batches.size(), 20000u / 32);
}

TEST_F(InferenceServiceTest, RequestThatCanNeverFitTheBudgetIsRejectedAtSubmit) {
  InferenceOptions o = Options(1);
  o.memory_budget_bytes = 10000;
  ServiceMemory memory;
  memory.output = [](int64_t length, uint32_t) { return static_cast<size_t>(4 * length); };
  auto created = CreateInferenceServiceWithRunners(
      nullptr, ModelLimits{65536, 1000, 1}, o, &clock_, &observer_,
      [this](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
        return std::unique_ptr<DocumentRunner>(new FakeRunner(&world_));
      },
      std::move(memory));
  ASSERT_TRUE(created.ok()) << created.status();
  service_ = std::move(created).value();
  absl::Status s = service_->Submit(Request({Doc(2000), Doc(1000)}, -1, true), answers_.Callback(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("outputs take 12000 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("--memory_budget_bytes=10000"));
  service_->Shutdown();
  absl::MutexLock lock(&observer_.mu_);
  EXPECT_EQ(observer_.rejected_["too_large"], 1);
}


}  // namespace
}  // namespace reformer::serving
