// Race canaries for the ThreadSanitizer build (built only there; tests/sanitizers/CMakeLists.txt).
// Each racy case is run alone by tsan_run.py --expect-race NAME: the test FAILS unless TSan reports
// a data race in NAME, so a TSan set-up that has gone blind (a suppression, the report filter, or
// an uninstrumented library hiding our code) turns CI red. The clean cases must give no report:
// they prove absl::Mutex is visible to TSan (Debian's Abseil is not instrumented; this build links
// the TSan-built one, scripts/build-tsan-abseil.sh).
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/reformer.grpc.pb.h"

namespace {

constexpr int kIterations = 1000;

// Plain memory written by two threads with nothing ordering them.
__attribute__((noinline)) void RaceCanaryUnsynchronizedIncrement(int* counter) {
  for (int i = 0; i < kIterations; ++i) ++*counter;
}

// The writer holds an absl::Mutex, the reader does not: still a race.
__attribute__((noinline)) void RaceCanaryLockedWrite(absl::Mutex* mu, int* value) {
  for (int i = 0; i < kIterations; ++i) {
    absl::MutexLock lock(mu);
    ++*value;
  }
}
__attribute__((noinline)) int RaceCanaryUnlockedRead(const int* value) {
  int sum = 0;
  for (int i = 0; i < kIterations; ++i) sum += *value;
  return sum;
}

// The pattern Debian's uninstrumented Abseil made TSan report falsely (`++started_workers_` under
// absl::MutexLock in server/inference): correct locking, no report expected.
__attribute__((noinline)) void CleanLockedIncrement(absl::Mutex* mu, int* counter) {
  for (int i = 0; i < kIterations; ++i) {
    absl::MutexLock lock(mu);
    ++*counter;
  }
}

TEST(RaceCanary, UnsynchronizedCounter) {
  int counter = 0;
  std::thread a(RaceCanaryUnsynchronizedIncrement, &counter);
  std::thread b(RaceCanaryUnsynchronizedIncrement, &counter);
  a.join();
  b.join();
  EXPECT_GT(counter, 0);
}

TEST(RaceCanary, WriteUnderMutexReadWithout) {
  absl::Mutex mu;
  int value = 0;
  int seen = 0;
  std::thread writer(RaceCanaryLockedWrite, &mu, &value);
  std::thread reader([&] { seen = RaceCanaryUnlockedRead(&value); });
  writer.join();
  reader.join();
  EXPECT_GE(seen, 0);
}

TEST(RaceCanary, CounterUnderAbslMutexIsClean) {
  absl::Mutex mu;
  int counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(CleanLockedIncrement, &mu, &counter);
  for (std::thread& t : threads) t.join();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(counter, 4 * kIterations);
}

TEST(RaceCanary, AbslConditionHandOffIsClean) {
  absl::Mutex mu;
  bool ready = false;
  std::vector<int> payload;  // written before the hand-off, read after it, never under the lock
  std::thread consumer([&] {
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&ready));
    }
    EXPECT_EQ(payload.size(), 3u);
  });
  payload = {1, 2, 3};
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  consumer.join();
}

// A race inside a gRPC callback handler: two calls in flight at once on gRPC's threads write a
// member with no lock. gRPC itself is not instrumented; this proves the report filter
// (tsan_run.py) still counts races in our code when it runs on gRPC's threads.
class RacyService final : public reformer::v1::ReformerService::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const reformer::v1::GetModelInfoRequest*,
                                         reformer::v1::GetModelInfoResponse* response) override {
    RaceCanaryHandlerWrite();
    // Keep both calls in flight until both have written (bounded wait; the racy write comes
    // first, so this synchronisation does not order the two writes).
    {
      absl::MutexLock lock(&mu_);
      ++arrived_;
      mu_.AwaitWithTimeout(absl::Condition(this, &RacyService::BothArrived), absl::Seconds(10));
      response->set_num_layers(arrived_);
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  __attribute__((noinline)) void RaceCanaryHandlerWrite() { last_caller_ = std::this_thread::get_id(); }
  bool BothArrived() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return arrived_ >= 2; }

  std::thread::id last_caller_;
  absl::Mutex mu_;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(RaceCanary, RaceInGrpcHandler) {
  RacyService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = reformer::v1::ReformerService::NewStub(channel);
  std::vector<int> layers(2, 0);
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&, c] {
      grpc::ClientContext ctx;
      reformer::v1::GetModelInfoResponse response;
      grpc::Status status = stub->GetModelInfo(&ctx, {}, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      layers[c] = static_cast<int>(response.num_layers());
    });
  }
  for (std::thread& t : clients) t.join();
  server->Shutdown();
  EXPECT_EQ(layers, std::vector<int>({2, 2})) << "the two calls were not in flight together";
}

}  // namespace
