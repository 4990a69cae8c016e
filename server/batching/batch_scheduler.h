// BatchScheduler: the request queue of the server. Admission, the memory budget, deadlines,
// cancellation, priorities and batch formation, with no threads, no gRPC and no engine: time comes
// from an injected Clock, and the caller drives it (`NextBatch()`, `Complete()`, `Sweep()`), so tests
// run on a FakeClock without sleeps. server/inference wraps it with worker threads.
//
// Unit of work. A task (one client request) has one or more documents; each document is scheduled on
// its own, so the documents of one request may run in different batches and on different workers.
// A task is answered (FinishFn) exactly once, when all its documents are done or it failed.
//
// Batch formation (NextBatch). Queued documents are ordered by priority class (1 = highest, 2, ...,
// and 0 = "default" which ranks below every explicit level), then arrival. The first document in that
// order is the head (but see aging below). A batch holds documents of the head's `batch_key` only
// (same requested outputs), whose lengths are within `length_ratio` of each other (similar lengths: a
// short document never waits for a long batch mate), added in order (priority, closeness of length,
// arrival) while the batch stays within max_batch_tokens, max_batch_size and the free memory of the
// budget (below). The batch is released when it is full (a candidate did not fit, or max_batch_size
// was reached) or when the head has waited max_queue_delay, or at once while draining.
// Bounds of the search, which keep it logarithmic: candidates come from at most max_batch_size
// priority classes of the key; a direction of the length walk (outward from the head's length) ends
// at the first candidate that does not fit the free memory (upward no longer one would; downward this
// gives up shorter ones that might), and the search ends after max_batch_size passed-over candidates
// (cancelled ones, or requests not started during a memory fallback, below). Without memory pressure,
// cancellations or more than max_batch_size priority levels, batches are exactly those of the former
// scan of the whole queue (tests/server/batching_scheduler_test.cc keeps it as the reference).
//
// Batch fill. Batching buys matmul efficiency only up to a few thousand rows; beyond that a bigger
// batch computes no faster per token, but it holds all its requests until its slowest document is done
// and leaves the other workers idle once the queue runs dry (16 closed-loop clients of 512-16,384-token
// documents: 24 documents ran in 9 batches, p90 latency = the run's length; docs/results/load.md).
// So documents join a batch only while it stays within batch_fill_tokens (the server sets it to
// long_batch_tokens: batches of several documents are never long); a single document above it forms
// a batch of its own.
//
// Long documents do not starve short ones. A batch of more than `long_batch_tokens` tokens is "long".
// With W >= 2 workers at most W-1 long batches run at once: the remaining worker only forms batches of
// at most long_batch_tokens tokens. Latency bound for a document of at most long_batch_tokens tokens at
// the head of its priority class: it starts within
//     max_queue_delay + (compute time of one batch of <= long_batch_tokens tokens)
// after it reaches the head, however long the documents running elsewhere are (a 64K-token document
// occupies one worker; 512-token requests keep completing on the other). Work ahead of it in the same or
// higher priority class adds to this, as in any FIFO. With W = 1 there is no reservation: a short
// document may wait for one whole batch (up to max_batch_tokens tokens) in flight.
//
// Priorities do not starve. A request that has been queued for `priority_aging` is ordered as if it
// had the highest priority, by arrival: once it is the oldest queued request (with a document this
// worker may run) its first queued document heads the next batch. So a request of any priority starts
// within priority_aging + (the time to start the documents of the requests that arrived before it,
// at most max_queue_tokens tokens) + max_queue_delay, however many higher-priority requests keep
// arriving after it (memory waits and the long-batch reservation add as above). Aging decides the
// head only; batch mates are still picked by (priority, length, arrival).
//
// Memory (MemoryBudget, shared by the whole process). A request's outputs (OutputBytesFn, summed over
// its documents) are reserved when its first document enters a batch and stay reserved until its
// response has been sent: the scheduler moves them into BatchTask::output_memory, the FinishFn receives
// them with the task on an OK answer and must keep them until the response is out (on an error answer
// they are released before FinishFn). A batch's working memory (MemoryEstimateFn) is reserved when it is
// formed and released by Complete(). A batch is formed only when its working memory plus the outputs of
// the requests it starts fit what is free; otherwise the queue waits (nothing fails) until memory is
// released (MemoryBudget::Listener tells the caller when to look again). No deadlock: a request starts
// only if the outputs of all started, unfinished requests plus the largest single-document working
// memory among those that still have queued documents fit the budget's total, and when the head does
// not fit, the oldest started request's documents run first (unless the long-batch reservation is in
// force: then running long batches will release memory). So once running batches and sent responses
// have released their memory, some queued document always fits.
//
// Admission (Schedule), every message carries the numbers:
//   INVALID_ARGUMENT   no documents, an empty document, a document longer than max_document_tokens
//                      (the model context), or a total above max_tokens_per_request;
//   RESOURCE_EXHAUSTED a request that can never run: a document above max_batch_tokens, or its outputs
//                      plus the working memory of its longest document alone above the budget's total,
//                      or a request above max_queue_tokens;
//   UNAVAILABLE        draining/shut down, or the queue is full (max_queue_requests / max_queue_tokens).
// Deadlines/cancellation: a queued task whose deadline has passed is answered DEADLINE_EXCEEDED without
// computing at the next NextBatch/Sweep. Cancellation flags are polled: each NextBatch/Sweep reads at
// most kCancelPollsPerSweep flags, round robin over the tasks, and NextBatch also reads the flags of the
// documents it considers for a batch; so a cancelled queued task is answered CANCELLED without computing
// within ceil(inflight_requests / kCancelPollsPerSweep) sweeps (the service sweeps every 10 ms), and
// sooner if it reaches the head. ShouldStop() tells a running batch that all its tasks are
// cancelled/expired (or the scheduler aborts), so the worker can stop mid-forward; tasks still wanted in
// a batch keep running.
//
// Cost (n = queued documents, b = max_batch_size). Every index is an ordered tree (document_queue.h and
// the per-request indexes below): NextBatch does O(b) index operations for the head, the length walk of
// its batch mates and their removal, plus O(kCancelPollsPerSweep) for the polls, each O(log n), so
// O((b + kCancelPollsPerSweep) log n) under the mutex, whatever the queue holds, plus at most b calls
// of MemoryEstimateFn on at most b lengths (as before: independent of n). NextWakeup is
// O(log n). Work that happens once per document over its life (insertion by Schedule; removal when it
// expires, is cancelled or its request fails) is O(log n) per document, charged to the call that does it.
// index_operations() counts the index operations, for tests.
//
// Tuning: long_batch_tokens trades the short-request latency bound (smaller = tighter bound) against
// throughput of long-document-only traffic (documents above it use only W-1 workers); max_queue_delay
// trades idle-load latency against batch fill; max_batch_tokens bounds matmul size and memory;
// priority_aging trades strict priority against the wait bound of lower priorities.
//
// Thread safety: all methods are thread-safe. FinishFn is called without internal locks held, on the
// thread of the call that finished the task (Schedule never finishes a task). The scheduler never
// releases memory while it holds its mutex (budget listeners may call back into it).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/batching/clock.h"
#include "server/batching/document_queue.h"
#include "server/batching/memory_budget.h"

namespace reformer::serving {

// Cancellation flags read per NextBatch/Sweep (see the class comment).
inline constexpr int kCancelPollsPerSweep = 64;

struct SchedulerOptions {
  int64_t max_batch_tokens = 65536;              // tokens per batch
  int64_t max_batch_size = 32;                   // documents per batch
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  int64_t max_queue_requests = 1024;             // queued (not yet started) requests
  int64_t max_queue_tokens = 4 << 20;            // queued (not yet started) document tokens
  int64_t max_tokens_per_request = 65536;        // sum over a request's documents
  int64_t max_document_tokens = 65536;           // model context (max_position_embeddings)
  int num_workers = 1;                           // workers calling NextBatch concurrently
  int64_t long_batch_tokens = 16384;             // batches above this are "long"; 0 = no reservation
  double length_ratio = 4.0;                     // max/min document length within a batch (>= 1)
  // A batch of several documents holds at most this many tokens (a longer document still runs alone,
  // up to max_batch_tokens); 0 = max_batch_tokens. See "Batch fill" in the class comment.
  int64_t batch_fill_tokens = 0;
  // A request queued this long heads the queue as if it had the highest priority (by arrival);
  // InfiniteDuration() = strict priorities (lower ones may starve), ZeroDuration() = plain FIFO heads.
  absl::Duration priority_aging = absl::Seconds(10);
  absl::Status Validate() const;
};

// One client request as the scheduler sees it. Subclass it to carry the payload (the scheduler only
// reads these fields; they must not change after Schedule()).
struct BatchTask {
  virtual ~BatchTask() = default;
  std::vector<int64_t> lengths;  // tokens per document (each >= 1)
  uint32_t batch_key = 0;        // only documents with equal keys share a batch (e.g. output flags)
  int priority = 0;              // 0 = default (lowest); 1 = highest, larger = lower
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled;  // may be null
  // The bytes the request's response will hold, when the caller knows them (> 0): reserved instead
  // of the sum of OutputBytesFn over its documents (a padded response holds more than its documents).
  size_t response_bytes = 0;
  // Written by the scheduler only: the outputs of all documents, reserved when the first document
  // enters a batch (kind kOutput; empty without a budget). On an OK answer the FinishFn gets it with
  // the task and keeps it until the response has been sent; on an error it is already released.
  MemoryReservation output_memory;
};

struct TaskTiming {
  absl::Time enqueued;
  absl::Time started = absl::InfiniteFuture();  // first document handed to a worker (if any)
  absl::Time finished;
  double queue_seconds = 0;    // enqueued → started (→ finished when never started)
  double compute_seconds = 0;  // started → finished (0 when never started)
  int64_t tokens = 0;          // tokens of documents computed successfully
};

struct BatchItem {
  BatchTask* task = nullptr;  // valid until Complete() for this batch
  int document = 0;           // index into task->lengths
  int64_t tokens = 0;
  uint64_t ticket = 0;        // internal
};

struct Batch {
  uint64_t id = 0;
  uint32_t batch_key = 0;
  std::vector<BatchItem> items;
  int64_t tokens = 0;
  size_t estimated_bytes = 0;  // working memory (reserved until Complete)
  size_t output_bytes = 0;     // outputs of the requests this batch started (moved to those tasks)
  bool long_batch = false;
  std::vector<int64_t> lengths() const;
};

class BatchScheduler {
 public:
  using FinishFn = std::function<void(std::unique_ptr<BatchTask> task, absl::Status status,
                                      const TaskTiming& timing)>;
  // Peak working bytes of running documents with these lengths as one batch (engine estimate). Must
  // be monotone: a longer document or one more document never needs less.
  using MemoryEstimateFn = std::function<size_t(absl::Span<const int64_t> lengths, uint32_t batch_key)>;
  // Bytes of one document's outputs (what its response holds), monotone in `length`.
  using OutputBytesFn = std::function<size_t(int64_t length, uint32_t batch_key)>;

  struct Memory {
    std::shared_ptr<MemoryBudget> budget;  // null: no memory bound
    MemoryEstimateFn working;              // null: 0 bytes
    OutputBytesFn output;                  // null: 0 bytes
  };

  // `clock` is borrowed and must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(const SchedulerOptions& options, Memory memory,
                                                                const Clock* clock, FinishFn finish);
  // Tasks still queued or running are answered UNAVAILABLE if Abort() was not called.
  ~BatchScheduler();

  // On OK takes ownership (`*task` becomes null) and the task will be finished exactly once.
  // On error `*task` is untouched and FinishFn is never called for it. `reject_reason` (optional)
  // gets a metrics label: "invalid", "too_large", "queue_full", "draining".
  absl::Status Schedule(std::unique_ptr<BatchTask>* task, std::string* reject_reason = nullptr);

  // Answers expired (and polled cancelled) queued tasks, then returns a batch that is ready now, or
  // null. The caller must call Complete() exactly once for every batch returned.
  std::unique_ptr<Batch> NextBatch();

  // Reports the outcome of each item of `batch` (same order) and releases the batch's working memory,
  // except min(keep_bytes, batch.estimated_bytes) of it, which move to `*kept` (kind kWorking) when
  // `kept` is not null (a worker whose engine session keeps its last run's memory holds it there).
  // A failed document fails its task (its other queued documents are dropped); the first error is the
  // task's answer.
  void Complete(const Batch& batch, absl::Span<const absl::Status> results, size_t keep_bytes = 0,
                MemoryReservation* kept = nullptr);

  // Answers expired and polled cancelled queued tasks. Returns how many were answered.
  int Sweep();

  // True when every task of `batch` is cancelled or expired, or after Abort():
  // the worker may stop computing. Cheap (no lock); call it from the engine's cancel callback.
  bool ShouldStop(const Batch& batch) const;
  // The answer for an item whose computation was stopped: CANCELLED, DEADLINE_EXCEEDED or the
  // abort status.
  absl::Status StopStatus(const BatchItem& item) const;

  // The earliest future time at which a queued task's deadline passes, a queued task's queue delay
  // ends or a queued task ages (InfiniteFuture when nothing is queued). Neither cancellation flags
  // nor memory releases are time events: poll, and listen to the budget.
  absl::Time NextWakeup() const;

  // New Schedule() calls fail UNAVAILABLE; queued batches are released without waiting.
  void StartDraining();
  // Answers every queued task with `status` now; running batches are asked to stop (ShouldStop) and
  // their tasks are answered with StopStatus when they complete. Implies StartDraining().
  void Abort(const absl::Status& status);

  int64_t queued_requests() const;
  int64_t queued_tokens() const;
  int64_t inflight_requests() const;  // accepted, not yet answered
  int64_t running_batches() const;
  bool Idle() const;  // nothing queued, nothing running, nothing unanswered
  // Ordered-index operations so far (each O(log n)); tests bound the work per call with it.
  uint64_t index_operations() const;
  const SchedulerOptions& options() const { return options_; }
  const std::shared_ptr<MemoryBudget>& memory_budget() const { return memory_.budget; }

 private:
  struct TaskState;
  struct Plan;
  // What a request needs from the budget, computed once at admission.
  struct Need {
    size_t outputs = 0;        // all documents' outputs
    size_t longest_working = 0;  // working memory of its longest document alone
    int longest = 0;           // index of that document
  };
  struct Finished {
    std::unique_ptr<BatchTask> task;
    absl::Status status;
    TaskTiming timing;
  };
  using TimeIndex = std::set<std::pair<absl::Time, uint64_t>>;  // (time, ticket)

  BatchScheduler(const SchedulerOptions& options, Memory memory, const Clock* clock, FinishFn finish);

  // Admission checks that need no lock (the options and the budget's total only).
  absl::Status CheckRequest(const BatchTask& task, std::string* reason) const;
  absl::Status CheckMemory(const BatchTask& task, const Need& need, std::string* reason) const;
  absl::Status CheckQueue(const BatchTask& task, std::string* reason) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Need ComputeNeed(const BatchTask& task) const;
  void Enqueue(std::unique_ptr<TaskState> state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  TaskState& StateOf(uint64_t ticket) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Cancelled(const TaskState& state) const;
  bool TaskStopped(const BatchTask& task, absl::Time now) const;
  absl::Status TaskStopStatus(const BatchTask& task, absl::Time now) const;
  // Removes one queued document of `state` from every index.
  void TakeDocument(TaskState* state, const DocEntry& doc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `state` has no queued document left: removes it from the per-request indexes.
  void Dequeued(TaskState* state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the queued documents of `state`, recording `status` as its answer if it has none.
  void FailTask(TaskState* state, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the queued task `ticket` (if still queued) and finishes it when nothing of it runs.
  void Stop(uint64_t ticket, const absl::Status& status, absl::Time now, std::vector<Finished>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves finished tasks (nothing queued, nothing running) to `out`.
  void MaybeFinish(uint64_t ticket, absl::Time now, std::vector<Finished>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLocked(absl::Time now, std::vector<Finished>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PollCancelled(absl::Time now, std::vector<Finished>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Batch formation.
  std::optional<DocEntry> PickHead(absl::Time now, bool short_only, std::vector<Finished>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<DocEntry> FallbackHead() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `reserve`: the long-batch reservation applies to this batch.
  Plan NewPlan(bool reserve, bool started_only) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PlanBatch(const DocEntry& head, Plan* plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WalkClass(Plan* plan, int rank, const LengthSet& docs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool TryAdd(Plan* plan, TaskState* state, const DocEntry& doc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Ready(const Plan& plan, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<Batch> Commit(const Plan& plan, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<Batch> FormBatch(absl::Time now, std::vector<Finished>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Deliver(std::vector<Finished>* finished);

  const SchedulerOptions options_;
  const Memory memory_;
  const Clock* const clock_;
  const FinishFn finish_;

  mutable absl::Mutex mu_;
  mutable uint64_t ops_ ABSL_GUARDED_BY(mu_) = 0;
  DocumentQueue queue_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::unique_ptr<TaskState>> tasks_ ABSL_GUARDED_BY(mu_);  // every unanswered task
  // Requests with queued documents (with queued short documents), by arrival: the aged head.
  std::set<uint64_t> fifo_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> fifo_short_ ABSL_GUARDED_BY(mu_);
  TimeIndex enqueued_ ABSL_GUARDED_BY(mu_);   // (enqueued, ticket) of requests with queued documents
  TimeIndex deadlines_ ABSL_GUARDED_BY(mu_);  // (deadline, ticket) of those with a finite deadline
  // Started requests (outputs reserved) that still have queued documents, by arrival, and the working
  // memory of their longest documents (the no-deadlock rule).
  std::set<uint64_t> started_queued_ ABSL_GUARDED_BY(mu_);
  std::multiset<size_t> started_working_ ABSL_GUARDED_BY(mu_);
  size_t started_outputs_ ABSL_GUARDED_BY(mu_) = 0;  // outputs of started, unanswered requests
  std::map<uint64_t, MemoryReservation> running_ ABSL_GUARDED_BY(mu_);  // batch id → working memory
  uint64_t poll_cursor_ ABSL_GUARDED_BY(mu_) = 0;  // last ticket whose cancellation flag was polled
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_batch_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_plan_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t queued_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_batches_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_long_batches_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> aborted_{false};
  absl::Status abort_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reformer::serving
