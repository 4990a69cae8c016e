// SequenceQueue on a fake clock: order (priority, arrival, aging), memory admission (a head that
// does not fit waits and is not overtaken; never-fitting is RESOURCE_EXHAUSTED), limits, draining,
// deadlines and cancellation of waiting sequences, and that a started task's memory is returned
// when the task is destroyed.
#include "server/batching/sequence_queue.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace reformer::serving {
namespace {

struct Ended {
  int id;
  absl::StatusCode code;
};

struct Task : SequenceTask {
  int id = 0;
};

class SequenceQueueTest : public ::testing::Test {
 protected:
  void Make(int64_t budget_bytes, SequenceQueueOptions o = {}) {
    budget_ = *MemoryBudget::Create(budget_bytes);
    auto q = SequenceQueue::Create(o, budget_, &clock_, [this](std::unique_ptr<SequenceTask> t, absl::Status s) {
      ended_.push_back({static_cast<Task&>(*t).id, s.code()});
    });
    ASSERT_TRUE(q.ok()) << q.status();
    queue_ = *std::move(q);
  }
  absl::Status Add(int id, size_t cache, int priority = 0, absl::Time deadline = absl::InfiniteFuture()) {
    auto t = std::make_unique<Task>();
    t->id = id;
    t->cache_bytes = cache;
    t->prefill_bytes = 10;
    t->priority = priority;
    t->deadline = deadline;
    t->cancelled = std::make_shared<std::atomic<bool>>(false);
    flags_[id] = t->cancelled;
    std::unique_ptr<SequenceTask> base = std::move(t);
    return queue_->Admit(&base);
  }
  static std::vector<int> Ids(const std::vector<std::unique_ptr<SequenceTask>>& v) {
    std::vector<int> ids;
    for (const auto& t : v) ids.push_back(static_cast<const Task&>(*t).id);
    return ids;
  }

  FakeClock clock_;
  std::shared_ptr<MemoryBudget> budget_;
  std::unique_ptr<SequenceQueue> queue_;
  std::vector<Ended> ended_;
  std::map<int, std::shared_ptr<std::atomic<bool>>> flags_;
};

TEST_F(SequenceQueueTest, PriorityThenArrivalAndAgingPreventsStarvation) {
  SequenceQueueOptions o;
  o.priority_aging = absl::Seconds(10);
  Make(1 << 20, o);
  ASSERT_TRUE(Add(1, 100, 0).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(Add(2, 100, 2).ok());
  ASSERT_TRUE(Add(3, 100, 1).ok());
  ASSERT_TRUE(Add(4, 100, 1).ok());
  EXPECT_EQ(Ids(queue_->Start(2, 1000)), (std::vector<int>{3, 4}));
  clock_.Advance(absl::Seconds(9));  // task 1 has waited 10 s: it goes first now
  EXPECT_EQ(Ids(queue_->Start(1, 1000)), (std::vector<int>{1}));
  EXPECT_EQ(Ids(queue_->Start(5, 1000)), (std::vector<int>{2}));
}

TEST_F(SequenceQueueTest, HeadWaitsForMemoryAndIsNotOvertaken) {
  Make(1000);
  ASSERT_TRUE(Add(1, 590).ok());
  ASSERT_TRUE(Add(2, 590).ok());
  ASSERT_TRUE(Add(3, 10).ok());
  std::vector<std::unique_ptr<SequenceTask>> first = queue_->Start(5, 1000);
  ASSERT_EQ(Ids(first), (std::vector<int>{1}));  // 2 does not fit now, and 3 does not pass it
  EXPECT_EQ(budget_->reserved_bytes(MemoryKind::kCache), 590u);
  EXPECT_EQ(queue_->Start(5, 1000).size(), 0u);
  first.clear();  // the task ends: its memory returns at once
  EXPECT_EQ(budget_->reserved_bytes(), 0u);
  EXPECT_EQ(Ids(queue_->Start(5, 1000)), (std::vector<int>{2, 3}));
  // Never fits: refused at once with the numbers.
  absl::Status s = Add(9, 2000);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("2010"), std::string::npos) << s;
}

TEST_F(SequenceQueueTest, PromptTokenBoundAfterTheFirst) {
  Make(1 << 20);
  for (int id = 1; id <= 3; ++id) {
    auto t = std::make_unique<Task>();
    t->id = id;
    t->prompt_tokens = 600;
    std::unique_ptr<SequenceTask> base = std::move(t);
    ASSERT_TRUE(queue_->Admit(&base).ok());
  }
  EXPECT_EQ(Ids(queue_->Start(5, 500)), (std::vector<int>{1}));  // one longer prompt runs alone
  EXPECT_EQ(Ids(queue_->Start(5, 1200)), (std::vector<int>{2, 3}));
}

TEST_F(SequenceQueueTest, LimitsDrainingDeadlinesAndCancellation) {
  SequenceQueueOptions o;
  o.max_waiting = 3;
  Make(1 << 20, o);
  ASSERT_TRUE(Add(1, 10, 0, clock_.Now() + absl::Seconds(1)).ok());
  ASSERT_TRUE(Add(2, 10).ok());
  ASSERT_TRUE(Add(3, 10).ok());
  EXPECT_EQ(Add(4, 10).code(), absl::StatusCode::kUnavailable);  // queue full
  EXPECT_EQ(queue_->NextWakeup(), clock_.Now() + absl::Seconds(1));
  flags_[2]->store(true);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(queue_->Sweep(), 2);
  ASSERT_EQ(ended_.size(), 2u);
  EXPECT_EQ(ended_[0].id, 1);
  EXPECT_EQ(ended_[0].code, absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ended_[1].id, 2);
  EXPECT_EQ(ended_[1].code, absl::StatusCode::kCancelled);
  queue_->StartDraining();
  EXPECT_EQ(Add(5, 10).code(), absl::StatusCode::kUnavailable);
  queue_->Abort(absl::UnavailableError("down"));
  ASSERT_EQ(ended_.size(), 3u);
  EXPECT_EQ(ended_[2].id, 3);
  EXPECT_EQ(ended_[2].code, absl::StatusCode::kUnavailable);
  EXPECT_EQ(queue_->waiting(), 0);
}

}  // namespace
}  // namespace reformer::serving
