// BatchScheduler on a FakeClock: no threads, no sleeps. The test drives NextBatch/Complete as the
// workers would.
#include "server/batching/batch_scheduler.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <map>
#include <random>
#include <tuple>
#include <utility>
#include <memory>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batching/clock.h"

namespace reformer::serving {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

struct TestTask : BatchTask {
  int id = 0;
};

struct Answer {
  absl::Status status;
  size_t output_bytes = 0;  // output reservation handed over with the task
  TaskTiming timing;
  int count = 0;
};

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerOptions DefaultOptions() {
    SchedulerOptions o;
    o.max_batch_tokens = 1000;
    o.max_batch_size = 8;
    o.max_queue_delay = absl::Milliseconds(5);
    o.max_queue_requests = 100;
    o.max_queue_tokens = 100000;
    o.max_tokens_per_request = 5000;
    o.max_document_tokens = 4096;
    o.num_workers = 1;
    o.long_batch_tokens = 0;
    o.length_ratio = 4.0;
    return o;
  }

  void Make(const SchedulerOptions& options, BatchScheduler::Memory memory = {}) {
    auto s = BatchScheduler::Create(
        options, std::move(memory), &clock_,
        [this](std::unique_ptr<BatchTask> task, absl::Status status, const TaskTiming& timing) {
          const int id = static_cast<TestTask&>(*task).id;
          Answer& a = answers_[id];
          a.status = status;
          a.output_bytes = task->output_memory.bytes();
          a.timing = timing;
          ++a.count;
          if (hold_answered_) held_.push_back(std::move(task));  // as a response not yet sent
        });
    ASSERT_TRUE(s.ok()) << s.status();
    scheduler_ = std::move(s).value();
  }

  std::unique_ptr<TestTask> NewTask(int id, std::vector<int64_t> lengths, int priority = 0,
                                    uint32_t key = 0) {
    auto t = std::make_unique<TestTask>();
    t->id = id;
    t->lengths = std::move(lengths);
    t->priority = priority;
    t->batch_key = key;
    t->cancelled = std::make_shared<std::atomic<bool>>(false);
    return t;
  }

  // Schedules and returns the cancel flag.
  std::shared_ptr<std::atomic<bool>> Add(int id, std::vector<int64_t> lengths, int priority = 0,
                                         absl::Time deadline = absl::InfiniteFuture(), uint32_t key = 0) {
    auto t = NewTask(id, std::move(lengths), priority, key);
    t->deadline = deadline;
    auto flag = t->cancelled;
    std::unique_ptr<BatchTask> base = std::move(t);
    absl::Status s = scheduler_->Schedule(&base);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(base, nullptr);
    return flag;
  }

  static std::vector<int> Ids(const Batch& b) {
    std::vector<int> ids;
    for (const BatchItem& item : b.items) ids.push_back(static_cast<TestTask*>(item.task)->id);
    return ids;
  }

  void CompleteOk(const Batch& b) {
    std::vector<absl::Status> ok(b.items.size());
    scheduler_->Complete(b, ok);
  }

  static std::shared_ptr<MemoryBudget> Budget(int64_t bytes) { return *MemoryBudget::Create(bytes); }
  // Working memory: `per_token` bytes per token of the batch.
  static BatchScheduler::MemoryEstimateFn PerToken(size_t per_token) {
    return [per_token](absl::Span<const int64_t> lengths, uint32_t) {
      size_t sum = 0;
      for (int64_t l : lengths) sum += static_cast<size_t>(l);
      return sum * per_token;
    };
  }
  static BatchScheduler::OutputBytesFn OutputPerToken(size_t per_token) {
    return [per_token](int64_t length, uint32_t) { return static_cast<size_t>(length) * per_token; };
  }

  FakeClock clock_;
  bool hold_answered_ = false;  // keep answered tasks (and their output memory) in held_
  std::vector<std::unique_ptr<BatchTask>> held_;
  std::map<int, Answer> answers_;  // outlives scheduler_ (its destructor may still answer)
  std::unique_ptr<BatchScheduler> scheduler_;
};

TEST_F(SchedulerTest, OptionsValidate) {
  SchedulerOptions o = DefaultOptions();
  EXPECT_TRUE(o.Validate().ok());
  o.max_batch_tokens = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = DefaultOptions();
  o.length_ratio = 0.5;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(BatchScheduler::Create(o, {}, &clock_, [](auto, auto, const auto&) {}).ok());
  o = DefaultOptions();
  o.priority_aging = -absl::Seconds(1);
  EXPECT_THAT(o.Validate().message(), HasSubstr("priority_aging"));
}

TEST_F(SchedulerTest, BatchClosesWhenTokenBudgetIsFull) {
  Make(DefaultOptions());  // max_batch_tokens 1000
  Add(1, {400});
  Add(2, {400});
  Add(3, {400});
  // 400+400 fits, +400 does not: the batch is full and leaves without waiting for the queue delay.
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_THAT(Ids(*b1), ElementsAre(1, 2));
  EXPECT_EQ(b1->tokens, 800);
  // The remainder is not full: it waits for the head's queue delay.
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  clock_.Advance(absl::Milliseconds(5));
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b2, nullptr);
  EXPECT_THAT(Ids(*b2), ElementsAre(3));
  CompleteOk(*b1);
  CompleteOk(*b2);
  EXPECT_EQ(answers_.size(), 3u);
  for (auto& [id, a] : answers_) {
    EXPECT_TRUE(a.status.ok()) << id;
    EXPECT_EQ(a.count, 1);
    EXPECT_EQ(a.timing.tokens, 400);
  }
  EXPECT_TRUE(scheduler_->Idle());
}

TEST_F(SchedulerTest, BatchClosesAtMaxBatchSize) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 3;
  Make(o);
  for (int i = 1; i <= 5; ++i) Add(i, {10});
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_THAT(Ids(*b1), ElementsAre(1, 2, 3));
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);  // 2 left, not full, delay not over
  EXPECT_EQ(scheduler_->queued_requests(), 2);
  EXPECT_EQ(scheduler_->queued_tokens(), 20);
}

TEST_F(SchedulerTest, BatchRespectsMemoryEstimate) {
  SchedulerOptions o = DefaultOptions();
  std::vector<std::vector<int64_t>> calls;
  Make(o, {Budget(250000), [&calls](absl::Span<const int64_t> lengths, uint32_t) {
             calls.emplace_back(lengths.begin(), lengths.end());
             return PerToken(1000)(lengths, 0);  // 1000 bytes per token
           },
           nullptr});
  Add(1, {100});
  Add(2, {100});
  Add(3, {100});
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b), ElementsAre(1, 2));  // 300 tokens = 300 kB > 250 kB budget
  EXPECT_EQ(b->estimated_bytes, 200000u);
  EXPECT_FALSE(calls.empty());
}

TEST_F(SchedulerTest, QueueDelayOnFakeClock) {
  Make(DefaultOptions());
  const absl::Time t0 = clock_.Now();
  Add(1, {10});
  EXPECT_EQ(scheduler_->NextWakeup(), t0 + absl::Milliseconds(5));
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  clock_.Advance(absl::Milliseconds(4));
  Add(2, {10});
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  clock_.Advance(absl::Milliseconds(1));  // the head (task 1) has waited 5 ms
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b), ElementsAre(1, 2));
  EXPECT_EQ(scheduler_->NextWakeup(), absl::InfiniteFuture());
  clock_.Advance(absl::Milliseconds(20));
  CompleteOk(*b);
  EXPECT_DOUBLE_EQ(answers_[1].timing.queue_seconds, 0.005);
  EXPECT_DOUBLE_EQ(answers_[1].timing.compute_seconds, 0.020);
  EXPECT_DOUBLE_EQ(answers_[2].timing.queue_seconds, 0.001);
}

TEST_F(SchedulerTest, DrainingReleasesWithoutDelay) {
  Make(DefaultOptions());
  Add(1, {10});
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  scheduler_->StartDraining();
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  auto t = NewTask(2, {10});
  std::unique_ptr<BatchTask> base = std::move(t);
  std::string reason;
  absl::Status s = scheduler_->Schedule(&base, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(reason, "draining");
  EXPECT_NE(base, nullptr);  // ownership stays with the caller
  CompleteOk(*b);
  EXPECT_TRUE(scheduler_->Idle());
}

TEST_F(SchedulerTest, GroupsSimilarLengths) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_tokens = 20000;
  o.max_document_tokens = 20000;
  o.max_tokens_per_request = 20000;
  Make(o);
  Add(1, {100});
  Add(2, {5000});
  Add(3, {120});
  Add(4, {4800});
  Add(5, {390});   // within 4x of 100 and 120
  Add(6, {450});   // 450/100 > 4: not with task 1
  clock_.Advance(absl::Milliseconds(5));
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_THAT(Ids(*b1), UnorderedElementsAre(1, 3, 5));
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b2, nullptr);
  EXPECT_THAT(Ids(*b2), UnorderedElementsAre(2, 4));
  auto b3 = scheduler_->NextBatch();
  ASSERT_NE(b3, nullptr);
  EXPECT_THAT(Ids(*b3), ElementsAre(6));
  // Closest lengths first when not everything fits.
  o.max_batch_size = 2;
  Make(o);
  Add(10, {100});
  Add(11, {390});
  Add(12, {110});
  auto b = scheduler_->NextBatch();  // full at 2 documents
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b), ElementsAre(10, 12));
}

TEST_F(SchedulerTest, BatchesOnlyEqualKeys) {
  Make(DefaultOptions());
  Add(1, {10}, 0, absl::InfiniteFuture(), /*key=*/1);
  Add(2, {10}, 0, absl::InfiniteFuture(), /*key=*/2);
  Add(3, {10}, 0, absl::InfiniteFuture(), /*key=*/1);
  clock_.Advance(absl::Milliseconds(5));
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_THAT(Ids(*b1), ElementsAre(1, 3));
  EXPECT_EQ(b1->batch_key, 1u);
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b2, nullptr);
  EXPECT_THAT(Ids(*b2), ElementsAre(2));
}

TEST_F(SchedulerTest, PriorityOrder) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 1;
  Make(o);
  Add(1, {10}, /*priority=*/0);  // default: lowest
  Add(2, {10}, /*priority=*/3);
  Add(3, {10}, /*priority=*/1);  // highest
  Add(4, {10}, /*priority=*/3);
  Add(5, {10}, /*priority=*/0);
  std::vector<int> order;
  while (auto b = scheduler_->NextBatch()) {
    order.push_back(Ids(*b)[0]);
    CompleteOk(*b);
  }
  EXPECT_THAT(order, ElementsAre(3, 2, 4, 1, 5));
  EXPECT_EQ(answers_.size(), 5u);
}

TEST_F(SchedulerTest, HigherPriorityFillsBatchFirst) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 2;
  Make(o);
  Add(1, {10});
  Add(2, {10});
  Add(3, {10}, /*priority=*/1);
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b), ElementsAre(3, 1));
}

TEST_F(SchedulerTest, AdmissionErrorsCarryNumbers) {
  SchedulerOptions o = DefaultOptions();
  o.max_queue_requests = 2;
  o.max_queue_tokens = 1500;
  Make(o, {Budget(500000), PerToken(1000), nullptr});
  auto try_add = [&](std::vector<int64_t> lengths, std::string* reason, int priority = 0) {
    auto t = NewTask(99, std::move(lengths), priority);
    std::unique_ptr<BatchTask> base = std::move(t);
    absl::Status s = scheduler_->Schedule(&base, reason);
    if (!s.ok()) {
      EXPECT_NE(base, nullptr);
    }
    return s;
  };
  std::string reason;
  absl::Status s = try_add({}, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reason, "invalid");
  s = try_add({10, 0}, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("document 1 is empty"));
  s = try_add({5000}, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("5000 tokens"));
  EXPECT_THAT(s.message(), HasSubstr("4096"));
  s = try_add({400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400}, &reason);  // 5200 > 5000
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("5200 tokens in 13 documents"));
  EXPECT_THAT(s.message(), HasSubstr("--max_tokens_per_request=5000"));
  s = try_add({10}, &reason, /*priority=*/-1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // Can never fit a batch: tokens, then memory.
  s = try_add({1200}, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reason, "too_large");
  EXPECT_THAT(s.message(), HasSubstr("1200 tokens"));
  EXPECT_THAT(s.message(), HasSubstr("--max_batch_tokens=1000"));
  s = try_add({600}, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("600000 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("--memory_budget_bytes=500000"));
  s = try_add({500, 500, 500, 500}, &reason);  // 2000 > max_queue_tokens: never fits the queue
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("--max_queue_tokens=1500"));
  // Queue bounds: UNAVAILABLE.
  Add(1, {400, 400});
  s = try_add({400, 400}, &reason);  // 800 + 800 > 1500 queued tokens
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(reason, "queue_full");
  EXPECT_THAT(s.message(), HasSubstr("800 tokens queued + 800 requested > --max_queue_tokens=1500"));
  Add(2, {10});
  s = try_add({10}, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("2 requests queued (--max_queue_requests=2)"));
  EXPECT_TRUE(answers_.empty());  // rejected tasks are never answered through the callback
  // Once a batch leaves the queue there is room again.
  clock_.Advance(absl::Milliseconds(5));
  auto b1 = scheduler_->NextBatch();  // 400 + 400 tokens would be 800 kB > 500 kB: one document
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(b1->tokens, 400);
  EXPECT_EQ(scheduler_->queued_requests(), 2);
  // The budget is shared: while b1 holds 400 kB, the next 400-token document waits (nothing fails).
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  EXPECT_TRUE(answers_.empty());
  CompleteOk(*b1);
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b2, nullptr);
  EXPECT_EQ(scheduler_->queued_requests(), 1);
  EXPECT_TRUE(try_add({10}, &reason).ok());
}

TEST_F(SchedulerTest, ExpiredRequestsAnsweredWithoutComputing) {
  Make(DefaultOptions());
  const absl::Time t0 = clock_.Now();
  Add(1, {10}, 0, t0 + absl::Seconds(1));
  Add(2, {10}, 0, t0 + absl::Seconds(10));
  EXPECT_EQ(scheduler_->NextWakeup(), t0 + absl::Milliseconds(5));
  clock_.Advance(absl::Seconds(2));
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b), ElementsAre(2));  // task 1 never reaches a worker
  ASSERT_EQ(answers_.count(1), 1u);
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_DOUBLE_EQ(answers_[1].timing.queue_seconds, 2.0);
  EXPECT_EQ(answers_[1].timing.compute_seconds, 0);
  EXPECT_EQ(answers_[1].timing.tokens, 0);
  CompleteOk(*b);
  EXPECT_TRUE(answers_[2].status.ok());
}

TEST_F(SchedulerTest, DeadlineIsAWakeup) {
  Make(DefaultOptions());
  const absl::Time t0 = clock_.Now();
  Add(1, {10}, 0, t0 + absl::Seconds(1));
  EXPECT_EQ(scheduler_->NextWakeup(), t0 + absl::Milliseconds(5));  // queue delay first
  clock_.Advance(absl::Milliseconds(6));
  EXPECT_EQ(scheduler_->NextWakeup(), t0 + absl::Seconds(1));  // then the deadline
}

TEST_F(SchedulerTest, CancelledQueuedRequestAnsweredBySweep) {
  Make(DefaultOptions());
  auto flag = Add(1, {10});
  Add(2, {10});
  flag->store(true);
  EXPECT_EQ(scheduler_->Sweep(), 1);
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(scheduler_->Sweep(), 0);
  EXPECT_EQ(scheduler_->queued_requests(), 1);
  EXPECT_EQ(scheduler_->queued_tokens(), 10);
}

TEST_F(SchedulerTest, ShouldStopOnlyWhenEveryRequestIsGone) {
  Make(DefaultOptions());
  const absl::Time t0 = clock_.Now();
  auto f1 = Add(1, {10});
  Add(2, {10}, 0, t0 + absl::Seconds(1));
  clock_.Advance(absl::Milliseconds(5));
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->items.size(), 2u);
  EXPECT_FALSE(scheduler_->ShouldStop(*b));
  f1->store(true);
  EXPECT_FALSE(scheduler_->ShouldStop(*b));  // task 2 still wants its result
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(scheduler_->ShouldStop(*b));
  EXPECT_EQ(scheduler_->StopStatus(b->items[0]).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(scheduler_->StopStatus(b->items[1]).code(), absl::StatusCode::kDeadlineExceeded);
  scheduler_->Complete(*b, {scheduler_->StopStatus(b->items[0]), scheduler_->StopStatus(b->items[1])});
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(answers_[2].status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(SchedulerTest, CancelledWhileRunningAnsweredCancelledEvenIfComputed) {
  Make(DefaultOptions());
  auto f1 = Add(1, {10});
  clock_.Advance(absl::Milliseconds(5));
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  f1->store(true);
  CompleteOk(*b);
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kCancelled);
}

TEST_F(SchedulerTest, MultiDocumentRequestAnsweredOnceAfterAllDocuments) {
  SchedulerOptions o = DefaultOptions();
  o.num_workers = 2;
  Make(o);
  Add(1, {600, 600, 50});  // 600+600 > 1000: the two long documents go to different batches
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(b1->items.size(), 1u);
  EXPECT_EQ(b1->items[0].document, 0);
  clock_.Advance(absl::Milliseconds(5));
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b2, nullptr);
  EXPECT_EQ(b2->items[0].document, 1);
  auto b3 = scheduler_->NextBatch();
  ASSERT_NE(b3, nullptr);
  EXPECT_EQ(b3->items[0].document, 2);
  CompleteOk(*b2);
  CompleteOk(*b3);
  EXPECT_TRUE(answers_.empty());
  CompleteOk(*b1);
  ASSERT_EQ(answers_.count(1), 1u);
  EXPECT_TRUE(answers_[1].status.ok());
  EXPECT_EQ(answers_[1].timing.tokens, 1250);
  EXPECT_EQ(answers_[1].count, 1);
}

TEST_F(SchedulerTest, FailedDocumentFailsRequestAndDropsItsQueuedDocuments) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 1;
  Make(o);
  Add(1, {10, 10, 10});
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  scheduler_->Complete(*b, {absl::ResourceExhaustedError("workspace")});
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(answers_[1].count, 1);
  EXPECT_EQ(scheduler_->queued_tokens(), 0);
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  EXPECT_TRUE(scheduler_->Idle());
}

TEST_F(SchedulerTest, AbortAnswersEveryRequestExactlyOnce) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 2;
  Make(o);
  for (int i = 1; i <= 6; ++i) Add(i, {10});
  auto running = scheduler_->NextBatch();  // tasks 1, 2
  ASSERT_NE(running, nullptr);
  EXPECT_FALSE(scheduler_->ShouldStop(*running));
  scheduler_->Abort(absl::UnavailableError("shutting down"));
  EXPECT_TRUE(scheduler_->ShouldStop(*running));
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  EXPECT_EQ(answers_.size(), 4u);  // queued ones at once
  for (int i = 3; i <= 6; ++i) EXPECT_EQ(answers_[i].status.code(), absl::StatusCode::kUnavailable) << i;
  scheduler_->Complete(*running,
                       {scheduler_->StopStatus(running->items[0]), scheduler_->StopStatus(running->items[1])});
  ASSERT_EQ(answers_.size(), 6u);
  for (auto& [id, a] : answers_) {
    EXPECT_EQ(a.count, 1) << id;
    EXPECT_EQ(a.status.code(), absl::StatusCode::kUnavailable) << id;
  }
  EXPECT_THAT(std::string(answers_[1].status.message()), HasSubstr("shutting down"));
  EXPECT_TRUE(scheduler_->Idle());
}

TEST_F(SchedulerTest, DestructorAnswersWhatIsLeft) {
  Make(DefaultOptions());
  Add(1, {10});
  Add(2, {20});
  scheduler_.reset();
  ASSERT_EQ(answers_.size(), 2u);
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(answers_[2].count, 1);
}

TEST_F(SchedulerTest, LongBatchesLeaveOneWorkerForShortRequests) {
  SchedulerOptions o = DefaultOptions();
  o.num_workers = 2;
  o.max_batch_tokens = 65536;
  o.max_document_tokens = 65536;
  o.max_tokens_per_request = 65536;
  o.long_batch_tokens = 4096;
  Make(o);
  Add(1, {65536});  // fills a batch: released at once
  auto long_batch = scheduler_->NextBatch();
  ASSERT_NE(long_batch, nullptr);
  EXPECT_TRUE(long_batch->long_batch);
  Add(2, {60000});  // a second long document must not take the last worker
  // A stream of 512-token requests keeps completing while the 64K document runs.
  for (int i = 0; i < 50; ++i) {
    for (int j = 0; j < 4; ++j) Add(100 + 4 * i + j, {512});
    clock_.Advance(absl::Milliseconds(5));
    auto b = scheduler_->NextBatch();
    ASSERT_NE(b, nullptr) << i;
    EXPECT_FALSE(b->long_batch);
    EXPECT_LE(b->tokens, 4096);
    EXPECT_EQ(b->items.size(), 4u);
    clock_.Advance(absl::Milliseconds(20));
    CompleteOk(*b);
  }
  EXPECT_EQ(answers_.size(), 200u);
  // Short work is done; the second long document waits for the first to finish (only W-1 = 1 long).
  clock_.Advance(absl::Milliseconds(5));
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  CompleteOk(*long_batch);
  auto next = scheduler_->NextBatch();
  ASSERT_NE(next, nullptr);
  EXPECT_THAT(Ids(*next), ElementsAre(2));
}

TEST_F(SchedulerTest, ReservedWorkerCapsShortBatches) {
  SchedulerOptions o = DefaultOptions();
  o.num_workers = 2;
  o.max_batch_tokens = 10000;
  o.long_batch_tokens = 1000;
  o.max_document_tokens = 10000;
  o.max_tokens_per_request = 10000;
  Make(o);
  Add(1, {5000});
  auto b1 = scheduler_->NextBatch();
  clock_.Advance(absl::Milliseconds(5));
  if (b1 == nullptr) b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_TRUE(b1->long_batch);
  for (int i = 0; i < 6; ++i) Add(10 + i, {300});  // 1800 tokens of short work
  auto b2 = scheduler_->NextBatch();  // capped at 1000 tokens → full at 3 documents
  ASSERT_NE(b2, nullptr);
  EXPECT_EQ(b2->tokens, 900);
  EXPECT_FALSE(b2->long_batch);
}

// Batch fill: documents join a batch only while it stays within batch_fill_tokens, so 16 similar
// long documents make several batches (one per worker at a time) instead of one that holds them all;
// a single document above the fill bound still runs (alone), and short documents still batch.
TEST_F(SchedulerTest, BatchFillTokensBoundsBatchesOfSeveralDocuments) {
  SchedulerOptions o = DefaultOptions();
  o.num_workers = 2;
  o.max_batch_tokens = 1 << 20;
  o.max_document_tokens = 65536;
  o.max_tokens_per_request = 65536;
  o.long_batch_tokens = 16384;
  o.batch_fill_tokens = 16384;
  o.max_batch_size = 32;
  o.max_queue_tokens = 1 << 20;
  Make(o);
  for (int i = 0; i < 16; ++i) Add(1 + i, {6000 + 100 * i});
  std::vector<std::unique_ptr<Batch>> batches;
  while (auto b = scheduler_->NextBatch()) batches.push_back(std::move(b));
  EXPECT_EQ(batches.size(), 7u);  // full batches are released at once, the last after the queue delay
  clock_.Advance(absl::Milliseconds(5));
  while (auto b = scheduler_->NextBatch()) batches.push_back(std::move(b));
  ASSERT_EQ(batches.size(), 8u);
  for (const auto& b : batches) {
    EXPECT_EQ(b->items.size(), 2u);
    EXPECT_LE(b->tokens, 16384);
    EXPECT_FALSE(b->long_batch);
  }
  for (const auto& b : batches) CompleteOk(*b);
  Add(100, {40000});  // above the fill bound: a batch of its own, long
  Add(101, {30000});
  auto alone = scheduler_->NextBatch();
  ASSERT_NE(alone, nullptr);
  EXPECT_THAT(Ids(*alone), ElementsAre(100));
  EXPECT_TRUE(alone->long_batch);
  for (int i = 0; i < 40; ++i) Add(200 + i, {512});  // short ones still fill a batch (32 x 512)
  clock_.Advance(absl::Milliseconds(5));
  auto shorts = scheduler_->NextBatch();
  ASSERT_NE(shorts, nullptr);
  EXPECT_EQ(shorts->items.size(), 32u);
  CompleteOk(*shorts);
  CompleteOk(*alone);
}

TEST_F(SchedulerTest, BatchFillTokensMustNotBeNegative) {
  SchedulerOptions o = DefaultOptions();
  o.batch_fill_tokens = -1;
  EXPECT_THAT(o.Validate().message(), HasSubstr("batch_fill_tokens"));
}

TEST_F(SchedulerTest, SingleWorkerHasNoReservation) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_tokens = 10000;
  o.long_batch_tokens = 1000;
  o.max_document_tokens = 10000;
  o.max_tokens_per_request = 10000;
  Make(o);
  Add(1, {5000});
  Add(2, {5000});
  clock_.Advance(absl::Milliseconds(5));
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(b1->tokens, 10000);
  EXPECT_TRUE(b1->long_batch);
}


// --- Cost: one request of many one-token documents (issue 11) --------------------------------

class ManyRowsTest : public SchedulerTest {
 public:
  // Drains one request of `n` one-token documents; returns the largest number of index operations
  // one NextBatch took. Every document must run exactly once, in full batches.
  uint64_t Drain(int n) {
    answers_.clear();
    SchedulerOptions o = DefaultOptions();
    o.max_batch_size = 32;
    o.max_batch_tokens = 65536;
    o.max_tokens_per_request = n;
    o.max_queue_tokens = n;
    Make(o, {Budget(int64_t{1} << 30), PerToken(1000), OutputPerToken(4)});
    Add(1, std::vector<int64_t>(n, 1));
    std::vector<int> runs(n, 0);
    uint64_t max_ops = 0;
    int batches = 0;
    while (true) {
      const uint64_t before = scheduler_->index_operations();
      auto b = scheduler_->NextBatch();
      max_ops = std::max(max_ops, scheduler_->index_operations() - before);
      if (b == nullptr) break;
      ++batches;
      EXPECT_EQ(b->items.size(), 32u);  // full: released at once, no queue delay on the fake clock
      for (const BatchItem& item : b->items) ++runs[item.document];
      const uint64_t before_complete = scheduler_->index_operations();
      CompleteOk(*b);
      max_complete_ops_ = std::max(max_complete_ops_, scheduler_->index_operations() - before_complete);
    }
    EXPECT_EQ(batches, n / 32);
    EXPECT_EQ(std::count(runs.begin(), runs.end(), 1), n);  // each document exactly once
    EXPECT_EQ(answers_[1].count, 1);
    EXPECT_TRUE(answers_[1].status.ok()) << answers_[1].status;
    EXPECT_EQ(answers_[1].timing.tokens, n);
    EXPECT_EQ(answers_[1].output_bytes, static_cast<size_t>(4 * n));  // handed over with the task
    EXPECT_TRUE(scheduler_->Idle());
    return max_ops;
  }
  uint64_t max_complete_ops_ = 0;
};

TEST_F(ManyRowsTest, TwentyThousandOneTokenDocumentsDrainWithBoundedWorkPerBatch) {
  const uint64_t small = Drain(2048);
  const uint64_t complete_small = max_complete_ops_;
  const uint64_t large = Drain(20000);
  // O(batch size) index operations per NextBatch (each O(log n)), not O(n): the same for 2K and
  // 20K queued documents. A scan of the queue would be >= 20000.
  EXPECT_LE(large, 12u * 32 + kCancelPollsPerSweep) << "small queue: " << small;
  EXPECT_LE(large, small + 8);
  EXPECT_LE(max_complete_ops_, 4u * 32 + 8);
  EXPECT_LE(max_complete_ops_, complete_small + 8);
}

// A large mixed queue (lengths, priorities, output keys): the work per NextBatch stays bounded by the
// batch size, not by the queue.
TEST_F(SchedulerTest, WorkPerBatchIsBoundedOnAMixedQueue) {
  SchedulerOptions o = DefaultOptions();
  o.num_workers = 2;
  o.max_batch_size = 32;
  o.max_batch_tokens = 8192;
  o.long_batch_tokens = 2048;
  o.max_document_tokens = 4096;
  o.max_tokens_per_request = 1 << 20;
  o.max_queue_requests = 10000;
  o.max_queue_tokens = 1 << 26;
  Make(o, {Budget(int64_t{1} << 40), PerToken(100), OutputPerToken(4)});
  std::mt19937 rng(7);
  int docs = 0;
  for (int id = 0; id < 5000; ++id) {
    std::vector<int64_t> lengths(1 + rng() % 4);
    for (int64_t& l : lengths) l = 1 + static_cast<int64_t>(rng() % (rng() % 4 == 0 ? 4000 : 300));
    docs += static_cast<int>(lengths.size());
    Add(id, lengths, static_cast<int>(rng() % 4), absl::InfiniteFuture(), rng() % 2);
  }
  clock_.Advance(absl::Milliseconds(5));
  uint64_t max_ops = 0;
  int computed = 0;
  std::vector<std::unique_ptr<Batch>> running;
  while (true) {
    const uint64_t before = scheduler_->index_operations();
    auto b = scheduler_->NextBatch();
    max_ops = std::max(max_ops, scheduler_->index_operations() - before);
    if (b == nullptr && running.empty()) break;
    if (b != nullptr) {
      computed += static_cast<int>(b->items.size());
      running.push_back(std::move(b));
    }
    if (b == nullptr || running.size() == 2) {  // two workers
      CompleteOk(*running.front());
      running.erase(running.begin());
    }
  }
  EXPECT_EQ(computed, docs);
  EXPECT_EQ(answers_.size(), 5000u);
  // Head + at most 32 classes of the key + walk steps and removals for <= 32 documents + polls.
  EXPECT_LE(max_ops, 16u * 32 + kCancelPollsPerSweep);
}

// Expired and cancelled requests among many queued ones: a sweep does work for what it answers
// plus a bounded number of cancellation polls, not a scan of the queue.
TEST_F(SchedulerTest, SweepWorkIsBoundedByWhatItAnswers) {
  SchedulerOptions o = DefaultOptions();
  o.max_queue_requests = 5000;
  o.max_queue_tokens = 1 << 20;
  Make(o);
  const absl::Time t0 = clock_.Now();
  std::vector<std::shared_ptr<std::atomic<bool>>> flags;
  for (int i = 0; i < 4000; ++i) {
    flags.push_back(Add(i, {10}, 0, i % 400 == 0 ? t0 + absl::Seconds(1) : absl::InfiniteFuture()));
  }
  clock_.Advance(absl::Seconds(2));  // 10 requests expire
  uint64_t before = scheduler_->index_operations();
  EXPECT_EQ(scheduler_->Sweep(), 10);
  EXPECT_LE(scheduler_->index_operations() - before, 10u * 20 + kCancelPollsPerSweep + 4);
  EXPECT_EQ(answers_[400].status.code(), absl::StatusCode::kDeadlineExceeded);
  // A cancelled request is answered within ceil(inflight / kCancelPollsPerSweep) sweeps.
  flags[2345]->store(true);
  const int bound = (scheduler_->inflight_requests() + kCancelPollsPerSweep - 1) / kCancelPollsPerSweep;
  int sweeps = 0;
  while (answers_.count(2345) == 0 && sweeps <= bound) {
    before = scheduler_->index_operations();
    scheduler_->Sweep();
    EXPECT_LE(scheduler_->index_operations() - before, 20u + kCancelPollsPerSweep + 4);
    ++sweeps;
  }
  EXPECT_LE(sweeps, bound);
  EXPECT_EQ(answers_[2345].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(scheduler_->queued_requests(), 3989);
}

// A cancelled request that reaches the head is answered there, never computed.
TEST_F(SchedulerTest, CancelledHeadIsNotComputed) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 1;
  o.max_queue_requests = 1000;
  Make(o);
  for (int i = 0; i < 300; ++i) Add(i, {10});
  auto cancelled = Add(1000, {10}, /*priority=*/1);
  cancelled->store(true);
  Add(1001, {10}, /*priority=*/1);
  auto b = scheduler_->NextBatch();  // the poll cursor has not reached 1000 yet; the head check has
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b), ElementsAre(1001));
  EXPECT_EQ(answers_[1000].status.code(), absl::StatusCode::kCancelled);
}

// The new indexes form the same batches as the former scan-and-sort of the whole queue, on random
// workloads (priorities, output keys, lengths, multi-document requests, the long-batch reservation).
// The reference below is that former algorithm, kept as the specification.
struct RefDoc {
  int rank;
  int id;
  int document;
  int64_t tokens;
  uint32_t key;
};

std::vector<std::pair<int, int>> ReferenceBatch(std::vector<RefDoc>* queue, const SchedulerOptions& o,
                                                int64_t running_long, bool* is_long) {
  const bool reserve = o.num_workers >= 2 && o.long_batch_tokens > 0 && running_long >= o.num_workers - 1;
  const int64_t cap = reserve ? std::min(o.long_batch_tokens, o.max_batch_tokens) : o.max_batch_tokens;
  auto order = [](const RefDoc& a, const RefDoc& b) {
    return std::tie(a.rank, a.id, a.document) < std::tie(b.rank, b.id, b.document);
  };
  std::sort(queue->begin(), queue->end(), order);
  auto head = std::find_if(queue->begin(), queue->end(), [&](const RefDoc& d) { return d.tokens <= cap; });
  if (head == queue->end()) return {};
  struct Candidate {
    int rank;
    double distance;
    RefDoc doc;
  };
  std::vector<Candidate> candidates;
  for (auto it = queue->begin(); it != queue->end(); ++it) {
    if (it == head || it->tokens > cap || it->key != head->key) continue;
    const double ratio = static_cast<double>(std::max(it->tokens, head->tokens)) / std::min(it->tokens, head->tokens);
    if (ratio > o.length_ratio) continue;
    candidates.push_back({it->rank, std::abs(std::log(ratio)), *it});
  }
  std::sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
    if (a.rank != b.rank) return a.rank < b.rank;
    if (a.distance != b.distance) return a.distance < b.distance;
    return order(a.doc, b.doc);
  });
  std::vector<RefDoc> chosen = {*head};
  int64_t tokens = head->tokens, lo = head->tokens, hi = head->tokens;
  for (const Candidate& c : candidates) {
    if (static_cast<int64_t>(chosen.size()) >= o.max_batch_size) break;
    if (tokens + c.doc.tokens > cap) continue;
    const int64_t nlo = std::min(lo, c.doc.tokens), nhi = std::max(hi, c.doc.tokens);
    if (static_cast<double>(nhi) / nlo > o.length_ratio) continue;
    chosen.push_back(c.doc);
    tokens += c.doc.tokens;
    lo = nlo;
    hi = nhi;
  }
  std::vector<std::pair<int, int>> out;
  for (const RefDoc& d : chosen) {
    out.push_back({d.id, d.document});
    queue->erase(std::find_if(queue->begin(), queue->end(),
                              [&](const RefDoc& q) { return q.id == d.id && q.document == d.document; }));
  }
  *is_long = o.long_batch_tokens > 0 && tokens > o.long_batch_tokens;
  return out;
}

TEST_F(SchedulerTest, SameBatchesAsTheFormerScanOnRandomWorkloads) {
  std::mt19937 rng(11);
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE(round);
    SchedulerOptions o = DefaultOptions();
    o.num_workers = 1 + round % 3;
    o.max_batch_size = 1 + round * 3;
    o.max_batch_tokens = 2000;
    o.long_batch_tokens = round % 4 == 0 ? 0 : 300 + 100 * (round % 5);
    o.length_ratio = 1.0 + (round % 6);
    o.max_queue_requests = 100000;
    o.max_queue_tokens = 1 << 24;
    o.max_tokens_per_request = 100000;
    o.priority_aging = absl::InfiniteDuration();  // the reference has no aging
    Make(o);
    answers_.clear();
    std::vector<RefDoc> ref;
    std::vector<std::unique_ptr<Batch>> running;
    int64_t ref_running_long = 0;
    int next_id = 0;
    for (int step = 0; step < 400; ++step) {
      const int action = static_cast<int>(rng() % 10);
      if (action < 5) {  // a request of 1-6 documents
        const int docs = 1 + static_cast<int>(rng() % 6);
        std::vector<int64_t> lengths;
        for (int d = 0; d < docs; ++d) lengths.push_back(1 + static_cast<int64_t>(rng() % (rng() % 2 ? 40 : 1500)));
        const int priority = static_cast<int>(rng() % 4);
        const uint32_t key = rng() % 3 == 0 ? 1 : 0;
        const int id = next_id++;
        Add(id, lengths, priority, absl::InfiniteFuture(), key);
        for (int d = 0; d < docs; ++d) ref.push_back({priority <= 0 ? INT_MAX : priority, id, d, lengths[d], key});
      } else if (action < 8 || running.empty()) {
        clock_.Advance(absl::Milliseconds(5));  // every head is due: readiness plays no part here
        bool is_long = false;
        const auto expected = ReferenceBatch(&ref, o, ref_running_long, &is_long);
        auto b = scheduler_->NextBatch();
        std::vector<std::pair<int, int>> got;
        if (b != nullptr) {
          for (const BatchItem& item : b->items) got.push_back({static_cast<TestTask*>(item.task)->id, item.document});
          EXPECT_EQ(b->long_batch, is_long);
          if (b->long_batch) ++ref_running_long;
          running.push_back(std::move(b));
        }
        ASSERT_EQ(got, expected) << "step " << step;
      } else {  // complete a random running batch
        const size_t i = rng() % running.size();
        if (running[i]->long_batch) --ref_running_long;
        CompleteOk(*running[i]);
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    for (auto& b : running) CompleteOk(*b);
  }
}

// --- Priorities: aging -----------------------------------------------------------------------

// A flood of priority-1 requests: a default-priority request starts once it has waited
// priority_aging (it is then the oldest queued request); with aging off it never does.
TEST_F(SchedulerTest, AgingBoundsTheWaitOfDefaultPriorityUnderAFlood) {
  for (const bool aging : {true, false}) {
    SCOPED_TRACE(aging);
    SchedulerOptions o = DefaultOptions();
    o.max_batch_size = 1;
    o.priority_aging = aging ? absl::Seconds(1) : absl::InfiniteDuration();
    Make(o);
    answers_.clear();
    const absl::Time t0 = clock_.Now();
    Add(1, {10});  // default priority
    absl::Time started = absl::InfiniteFuture();
    for (int i = 0; i < 40; ++i) {
      Add(100 + i, {10}, /*priority=*/1);
      Add(200 + i, {10}, /*priority=*/1);  // the flood grows faster than it drains
      clock_.Advance(absl::Milliseconds(100));
      auto b = scheduler_->NextBatch();
      ASSERT_NE(b, nullptr);
      if (Ids(*b)[0] == 1) started = clock_.Now();
      CompleteOk(*b);
    }
    if (aging) {
      EXPECT_EQ(started, t0 + absl::Seconds(1));  // the first batch formed after 1 s of waiting
    } else {
      EXPECT_EQ(started, absl::InfiniteFuture());  // strict priorities starve it
    }
  }
}

TEST_F(SchedulerTest, AgingIsAWakeupAndKeepsArrivalOrderAmongAgedRequests) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 1;
  o.priority_aging = absl::Seconds(1);
  Make(o);
  const absl::Time t0 = clock_.Now();
  Add(1, {10}, /*priority=*/3);
  Add(2, {10});
  clock_.Advance(absl::Milliseconds(6));
  EXPECT_EQ(scheduler_->NextWakeup(), t0 + absl::Seconds(1));  // the queue delay has passed; aging next
  clock_.Advance(absl::Milliseconds(500));
  Add(3, {10}, /*priority=*/1);
  clock_.Advance(absl::Milliseconds(500));  // 1 and 2 have aged; 3 has not
  std::vector<int> order;
  while (auto b = scheduler_->NextBatch()) {
    order.push_back(Ids(*b)[0]);
    CompleteOk(*b);
  }
  EXPECT_THAT(order, ElementsAre(1, 2, 3));  // aged ones by arrival, ahead of priority 1
}

// --- Memory: one budget for working memory and outputs ---------------------------------------

TEST_F(SchedulerTest, BudgetIsSharedByConcurrentBatchesAndReleasedOnComplete) {
  SchedulerOptions o = DefaultOptions();
  o.num_workers = 2;
  o.max_batch_tokens = 400;
  auto budget = Budget(1000);
  Make(o, {budget, PerToken(1), nullptr});
  Add(1, {400});
  Add(2, {400});
  Add(3, {400});
  auto b1 = scheduler_->NextBatch();
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  ASSERT_NE(b2, nullptr);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kWorking), 800u);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);  // 1200 > 1000: waits, does not fail
  EXPECT_TRUE(answers_.empty());
  CompleteOk(*b1);
  EXPECT_EQ(budget->reserved_bytes(), 400u);
  auto b3 = scheduler_->NextBatch();
  ASSERT_NE(b3, nullptr);
  EXPECT_THAT(Ids(*b3), ElementsAre(3));
  CompleteOk(*b2);
  CompleteOk(*b3);
  EXPECT_EQ(budget->reserved_bytes(), 0u);
}

// A worker whose session keeps its last run's memory keeps that much of the batch's reservation.
TEST_F(SchedulerTest, CompleteCanKeepPartOfTheWorkingMemory) {
  auto budget = Budget(1000);
  Make(DefaultOptions(), {budget, PerToken(1), nullptr});
  Add(1, {500});
  clock_.Advance(absl::Milliseconds(5));
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  MemoryReservation kept;
  scheduler_->Complete(*b, {absl::OkStatus()}, /*keep_bytes=*/800, &kept);  // at most the 500 reserved
  EXPECT_EQ(kept.bytes(), 500u);
  EXPECT_EQ(kept.kind(), MemoryKind::kWorking);
  EXPECT_EQ(budget->reserved_bytes(), 500u);
  EXPECT_TRUE(answers_[1].status.ok());
  kept.Release();
  EXPECT_EQ(budget->reserved_bytes(), 0u);
}

TEST_F(SchedulerTest, OutputsAreHeldUntilTheAnsweredTaskIsReleased) {
  auto budget = Budget(1000);
  Make(DefaultOptions(), {budget, PerToken(1), OutputPerToken(2)});
  hold_answered_ = true;  // as the RPC layer does until the response has been sent
  Add(1, {300});          // 300 working + 600 outputs
  Add(2, {300}, 0, absl::InfiniteFuture(), /*key=*/1);
  clock_.Advance(absl::Milliseconds(5));
  auto b1 = scheduler_->NextBatch();
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(b1->estimated_bytes, 300u);
  EXPECT_EQ(b1->output_bytes, 600u);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kOutput), 600u);
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);  // 900 more do not fit beside 900
  CompleteOk(*b1);
  EXPECT_EQ(answers_[1].output_bytes, 600u);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kWorking), 0u);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kOutput), 600u);  // the response is not sent yet
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  held_.clear();  // "sent"
  EXPECT_EQ(budget->reserved_bytes(), 0u);
  auto b2 = scheduler_->NextBatch();
  ASSERT_NE(b2, nullptr);
  CompleteOk(*b2);
}

TEST_F(SchedulerTest, FailedRequestReleasesItsOutputsBeforeItIsAnswered) {
  auto budget = Budget(1000);
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 1;
  Make(o, {budget, PerToken(1), OutputPerToken(2)});
  hold_answered_ = true;
  Add(1, {100, 100});
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kOutput), 400u);  // both documents' outputs
  scheduler_->Complete(*b, {absl::InternalError("engine")});
  EXPECT_EQ(answers_[1].status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(answers_[1].output_bytes, 0u);
  EXPECT_EQ(budget->reserved_bytes(), 0u);
}

TEST_F(SchedulerTest, RequestWhoseOutputsCanNeverFitIsRejectedWithTheNumbers) {
  Make(DefaultOptions(), {Budget(1000), PerToken(1), OutputPerToken(3)});
  auto t = NewTask(1, {100, 200});  // 900 bytes of outputs + 200 working for the longest
  std::unique_ptr<BatchTask> base = std::move(t);
  std::string reason;
  absl::Status s = scheduler_->Schedule(&base, &reason);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(reason, "too_large");
  EXPECT_THAT(s.message(), HasSubstr("outputs take 900 bytes (2 documents)"));
  EXPECT_THAT(s.message(), HasSubstr("longest document (200 tokens)"));
  EXPECT_THAT(s.message(), HasSubstr("200 bytes of working memory"));
  EXPECT_THAT(s.message(), HasSubstr("--memory_budget_bytes=1000"));
  EXPECT_NE(base, nullptr);
  Add(2, {100, 100});  // 600 + 100 fits
}

// Two multi-document requests whose outputs would together leave no room for either one's next
// document: the second does not start until the first is done, and the first's documents go ahead
// of the (higher-priority) head that does not fit, so everything finishes.
TEST_F(SchedulerTest, MultiDocumentRequestsCannotDeadlockTheBudget) {
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 1;
  auto budget = Budget(155);
  Make(o, {budget, PerToken(5), [](int64_t, uint32_t) { return size_t{30}; }});  // 30 bytes per document
  Add(1, {1, 4, 4}, /*priority=*/2);  // outputs 90, longest working 20
  auto b = scheduler_->NextBatch();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->items[0].document, 0);
  Add(2, {1, 4}, /*priority=*/1);  // outputs 60, longest working 20: 90 + 60 + 20 > 155
  CompleteOk(*b);
  std::vector<std::pair<int, int>> order;
  for (int i = 0; i < 10 && !scheduler_->Idle(); ++i) {
    clock_.Advance(absl::Milliseconds(5));
    auto next = scheduler_->NextBatch();
    ASSERT_NE(next, nullptr) << "stuck with " << budget->reserved_bytes() << " bytes reserved";
    order.push_back({Ids(*next)[0], next->items[0].document});
    CompleteOk(*next);
  }
  EXPECT_THAT(order, ElementsAre(std::pair(1, 1), std::pair(1, 2), std::pair(2, 0), std::pair(2, 1)));
  EXPECT_TRUE(answers_[1].status.ok());
  EXPECT_TRUE(answers_[2].status.ok());
  EXPECT_EQ(budget->reserved_bytes(), 0u);
}

TEST_F(SchedulerTest, AbortReleasesEveryReservation) {
  auto budget = Budget(100000);
  SchedulerOptions o = DefaultOptions();
  o.max_batch_size = 2;
  Make(o, {budget, PerToken(10), OutputPerToken(4)});
  for (int i = 1; i <= 6; ++i) Add(i, {10});
  auto running = scheduler_->NextBatch();
  ASSERT_NE(running, nullptr);
  EXPECT_EQ(budget->reserved_bytes(), 2u * (100 + 40));
  scheduler_->Abort(absl::UnavailableError("shutting down"));
  scheduler_->Complete(*running,
                       {scheduler_->StopStatus(running->items[0]), scheduler_->StopStatus(running->items[1])});
  EXPECT_EQ(budget->reserved_bytes(), 0u);
  EXPECT_EQ(answers_.size(), 6u);
}

}  // namespace
}  // namespace reformer::serving
