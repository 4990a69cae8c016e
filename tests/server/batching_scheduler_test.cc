// BatchScheduler on a FakeClock: no threads, no sleeps. The test drives NextBatch/Complete as the
// workers would.
#include "server/batching/batch_scheduler.h"

#include <atomic>
#include <map>
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
  TaskTiming timing;
  int count = 0;
};

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerOptions DefaultOptions() {
    SchedulerOptions o;
    o.max_batch_tokens = 1000;
    o.max_batch_size = 8;
    o.memory_budget_bytes = size_t{1} << 40;
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

  void Make(const SchedulerOptions& options, BatchScheduler::MemoryEstimateFn estimate = nullptr) {
    auto s = BatchScheduler::Create(
        options, std::move(estimate), &clock_,
        [this](std::unique_ptr<BatchTask> task, absl::Status status, const TaskTiming& timing) {
          const int id = static_cast<TestTask&>(*task).id;
          Answer& a = answers_[id];
          a.status = status;
          a.timing = timing;
          ++a.count;
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

  FakeClock clock_;
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
  EXPECT_FALSE(BatchScheduler::Create(o, nullptr, &clock_, [](auto, auto, const auto&) {}).ok());
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
  o.memory_budget_bytes = 250000;
  std::vector<std::vector<int64_t>> calls;
  Make(o, [&calls](absl::Span<const int64_t> lengths, uint32_t) {
    calls.emplace_back(lengths.begin(), lengths.end());
    size_t sum = 0;
    for (int64_t l : lengths) sum += static_cast<size_t>(l);
    return sum * 1000;  // 1000 bytes per token
  });
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
  o.memory_budget_bytes = 500000;
  Make(o, [](absl::Span<const int64_t> lengths, uint32_t) {
    size_t sum = 0;
    for (int64_t l : lengths) sum += static_cast<size_t>(l);
    return sum * 1000;
  });
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

}  // namespace
}  // namespace reformer::serving
