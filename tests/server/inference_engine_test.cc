// InferenceService on real engine Sessions:
//  - batch invariance: the same documents sent concurrently (batched together, mixed lengths, two
//    workers) give the same outputs as sent one by one (<= 1e-5);
//  - the issue's cancellation test: a short request queued behind a cancelled 16K-token request
//    starts within about one layer's time of the cancel.
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/batching/clock.h"
#include "server/inference/inference_service.h"

namespace reformer::serving {
namespace {

constexpr absl::Duration kWait = absl::Seconds(120);

std::string SourceDir() {
  const char* dir = std::getenv("REFORMER_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

// Records batch starts (wall time) by token count.
class BatchObserver : public InferenceObserver {
 public:
  void OnBatch(int64_t documents, int64_t tokens) override {
    absl::MutexLock lock(&mu_);
    batches_.push_back({documents, tokens, absl::Now()});
  }
  struct Event {
    int64_t documents;
    int64_t tokens;
    absl::Time at;
  };
  bool WaitForBatchWithTokens(int64_t tokens, int skip, Event* out) {
    absl::MutexLock lock(&mu_);
    auto has = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      int seen = 0;
      for (const Event& e : batches_) {
        if (e.tokens == tokens && seen++ == skip) {
          *out = e;
          return true;
        }
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&has), kWait);
  }
  int64_t MaxDocumentsPerBatch() {
    absl::MutexLock lock(&mu_);
    int64_t m = 0;
    for (const Event& e : batches_) m = std::max(m, e.documents);
    return m;
  }

 private:
  absl::Mutex mu_;
  std::vector<Event> batches_ ABSL_GUARDED_BY(mu_);
};

class Waiter {
 public:
  DoneCallback Callback(int id) {
    return [this, id](InferenceResult r) {
      absl::MutexLock lock(&mu_);
      results_[id] = std::move(r);
    };
  }
  bool WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return results_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWait);
  }
  bool WaitForId(int id) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return results_.count(id) > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWait);
  }
  InferenceResult Take(int id) {
    absl::MutexLock lock(&mu_);
    return std::move(results_[id]);
  }

 private:
  absl::Mutex mu_;
  std::map<int, InferenceResult> results_ ABSL_GUARDED_BY(mu_);
};

// Output k of an answered request (its response buffer) as floats.
std::vector<float> Floats(const InferenceResult& r, size_t k) {
  const int64_t bytes = r.request->OutputBytes(r.request->outputs[k]);
  const float* p = r.request->buffer(k).as<float>();
  return std::vector<float>(p, p + bytes / 4);
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(InferenceEngineTest, ConcurrentEqualsSequential) {
  auto model = ReformerModel::Load(SourceDir() + "/tests/fixtures/f1_mixed_causal_multihash_rightpad");
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t context = (*model)->config().max_position_embeddings;
  const int64_t vocab = (*model)->config().vocab_size;

  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < 24; ++i) {
    const int64_t len = 1 + static_cast<int64_t>(rng() % context);
    std::vector<int32_t> doc(len);
    for (auto& t : doc) t = static_cast<int32_t>(rng() % vocab);
    docs.push_back(std::move(doc));
  }
  const ReformerConfig& config = (*model)->config();
  auto request = [&](int i) {
    auto r = std::make_unique<InferenceRequest>();
    r->documents.Append(docs[i]);
    r->dims = {config.vocab_size, 2 * config.hidden_size, config.pad_token_id};
    r->outputs = {OutputKind::kLogits, OutputKind::kHiddenStates, OutputKind::kTokenLogprobs,
                  OutputKind::kEmbedding};
    r->method = "test";
    return r;
  };

  RealClock clock;
  InferenceOptions options;
  options.workers = 2;
  options.threads_per_worker = 1;
  options.max_batch_size = 8;
  options.length_ratio = 1e9;  // mix every length in a batch: the strongest invariance check
  std::vector<InferenceResult> sequential(docs.size());
  {
    auto service = InferenceService::Create(*model, options, &clock, nullptr);
    ASSERT_TRUE(service.ok()) << service.status();
    Waiter waiter;
    for (size_t i = 0; i < docs.size(); ++i) {
      ASSERT_TRUE((*service)->Submit(request(i), waiter.Callback(i)).ok());
      ASSERT_TRUE(waiter.WaitForId(i));
      sequential[i] = waiter.Take(i);
      ASSERT_TRUE(sequential[i].status.ok()) << sequential[i].status;
    }
  }
  options.max_queue_delay = absl::Milliseconds(50);
  BatchObserver observer;
  auto service = InferenceService::Create(*model, options, &clock, &observer);
  ASSERT_TRUE(service.ok()) << service.status();
  Waiter waiter;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (size_t i = t; i < docs.size(); i += 4) {
        EXPECT_TRUE((*service)->Submit(request(i), waiter.Callback(i)).ok());
      }
    });
  }
  for (auto& c : clients) c.join();
  ASSERT_TRUE(waiter.WaitFor(docs.size()));
  EXPECT_GT(observer.MaxDocumentsPerBatch(), 1) << "the concurrent run never batched documents together";
  float worst = 0;
  bool bitwise = true;
  for (size_t i = 0; i < docs.size(); ++i) {
    InferenceResult r = waiter.Take(i);
    ASSERT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.request->num_buffers(), 4u);
    ASSERT_EQ(r.request->documents.length(0), static_cast<int64_t>(docs[i].size()));
    for (size_t k = 0; k < 4; ++k) {
      const std::vector<float> a = Floats(r, k), b = Floats(sequential[i], k);
      ASSERT_FALSE(a.empty());
      const float d = MaxAbsDiff(a, b);
      worst = std::max(worst, d);
      bitwise = bitwise && a == b;
      EXPECT_LE(d, 1e-5f) << "document " << i << " (" << docs[i].size() << " tokens) output " << k;
    }
  }
  std::printf("concurrent vs sequential: max |diff| %g (%s)\n", worst, bitwise ? "bitwise equal" : "not bitwise");
}

// A random model big enough that one layer over 16K tokens takes a measurable time.
absl::StatusOr<std::shared_ptr<const ReformerModel>> CancelTestModel() {
  const char* json = R"({
    "attn_layers": ["local", "lsh", "local", "lsh"],
    "hidden_size": 128, "num_attention_heads": 2, "attention_head_size": 64,
    "feed_forward_size": 512, "vocab_size": 258, "hidden_act": "relu", "is_decoder": true,
    "axial_pos_embds": true, "axial_pos_shape": [128, 128], "axial_pos_embds_dim": [64, 64],
    "max_position_embeddings": 16384, "lsh_attn_chunk_length": 64, "local_attn_chunk_length": 64,
    "lsh_num_chunks_before": 1, "lsh_num_chunks_after": 0, "local_num_chunks_before": 1,
    "local_num_chunks_after": 0, "num_hashes": 1, "num_buckets": [16, 32], "pad_token_id": 0
  })";
  auto config = ReformerConfig::FromJson(json, "cancel-test config");
  if (!config.ok()) return config.status();
  return ReformerModel::CreateRandom(*config, 42);
}

TEST(InferenceEngineTest, ShortRequestStartsWithinAboutOneLayerOfCancel) {
  auto model = CancelTestModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const int layers = static_cast<int>((*model)->config().num_layers());
  RealClock clock;
  InferenceOptions options;
  options.workers = 1;  // the short request can only run after the long one stops
  options.threads_per_worker = 1;
  options.max_queue_delay = absl::ZeroDuration();
  BatchObserver observer;
  auto service = InferenceService::Create(*model, options, &clock, &observer);
  ASSERT_TRUE(service.ok()) << service.status();

  std::mt19937 rng(3);
  auto make = [&](int64_t len) {
    auto r = std::make_unique<InferenceRequest>();
    int32_t* ids = r->documents.Append(len);
    for (int64_t p = 0; p < len; ++p) ids[p] = static_cast<int32_t>(rng() % 258);
    r->dims = {258, 256, 0};
    r->outputs = {OutputKind::kTokenLogprobs};
    r->method = "test";
    return r;
  };
  Waiter waiter;
  // 1. Time a full 16K forward to know one layer's time on this machine now.
  BatchObserver::Event full_start;
  ASSERT_TRUE((*service)->Submit(make(16384), waiter.Callback(0)).ok());
  ASSERT_TRUE(observer.WaitForBatchWithTokens(16384, 0, &full_start));
  ASSERT_TRUE(waiter.WaitForId(0));
  const absl::Duration full = absl::Now() - full_start.at;
  ASSERT_TRUE(waiter.Take(0).status.ok());
  const absl::Duration layer = full / layers;

  // 2. Same again, cancelled mid-forward with a short request queued behind it.
  auto long_request = make(16384);
  auto cancelled = long_request->cancelled;
  BatchObserver::Event long_start, short_start;
  ASSERT_TRUE((*service)->Submit(std::move(long_request), waiter.Callback(1)).ok());
  ASSERT_TRUE(observer.WaitForBatchWithTokens(16384, 1, &long_start));
  ASSERT_TRUE((*service)->Submit(make(512), waiter.Callback(2)).ok());
  absl::SleepFor(full / 3);  // well inside the forward
  const absl::Time cancel_at = absl::Now();
  cancelled->store(true);
  ASSERT_TRUE(observer.WaitForBatchWithTokens(512, 0, &short_start));
  ASSERT_TRUE(waiter.WaitForId(2));
  ASSERT_TRUE(waiter.WaitForId(1));
  EXPECT_EQ(waiter.Take(1).status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(waiter.Take(2).status.ok());
  const absl::Duration delay = short_start.at - cancel_at;
  std::printf("16K forward %s (%d layers, %s per layer); short request started %s after the cancel\n",
              absl::FormatDuration(full).c_str(), layers, absl::FormatDuration(layer).c_str(),
              absl::FormatDuration(delay).c_str());
  // "About one layer": allow the 2x timing spread of a shared 2-core machine plus scheduling slack.
  EXPECT_LE(delay, 2 * layer + absl::Milliseconds(50));
  EXPECT_LT(short_start.at - long_start.at, full);  // the long document did not run to the end
}

}  // namespace
}  // namespace reformer::serving
