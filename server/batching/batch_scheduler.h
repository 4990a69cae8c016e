// BatchScheduler: the request queue of the server. Admission, budgets, deadlines, cancellation and
// batch formation, with no threads, no gRPC and no engine: time comes from an injected Clock, and the
// caller drives it (`NextBatch()`, `Complete()`, `Sweep()`), so tests run on a FakeClock without sleeps.
// server/inference wraps it with worker threads.
//
// Unit of work. A task (one client request) has one or more documents; each document is scheduled on
// its own, so the documents of one request may run in different batches and on different workers.
// A task is answered (FinishFn) exactly once, when all its documents are done or it failed.
//
// Batch formation (NextBatch). Queued documents are ordered by priority class (1 = highest, 2, ...,
// and 0 = "default" which ranks below every explicit level), then arrival. The first document in that
// order is the head. A batch holds documents of the head's `batch_key` only (same requested outputs),
// whose lengths are within `length_ratio` of each other (similar lengths: a short document never waits
// for a long batch mate), added in order (priority, closeness of length, arrival) while the batch stays
// within max_batch_tokens, max_batch_size and memory_budget_bytes (the injected memory estimate of the
// whole batch). The batch is released when it is full (a candidate did not fit, or max_batch_size was
// reached) or when the head has waited max_queue_delay, or at once while draining.
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
// Tuning: long_batch_tokens trades the short-request latency bound (smaller = tighter bound) against
// throughput of long-document-only traffic (documents above it use only W-1 workers); max_queue_delay
// trades idle-load latency against batch fill; max_batch_tokens bounds matmul size and memory.
//
// Admission (Schedule), every message carries the numbers:
//   INVALID_ARGUMENT   no documents, an empty document, a document longer than max_document_tokens
//                      (the model context), or a total above max_tokens_per_request;
//   RESOURCE_EXHAUSTED a document that can never fit a batch (tokens > max_batch_tokens, or its memory
//                      estimate alone > memory_budget_bytes), or a request above max_queue_tokens;
//   UNAVAILABLE        draining/shut down, or the queue is full (max_queue_requests / max_queue_tokens).
// Deadlines/cancellation: a queued task whose `cancelled` flag is set or whose deadline has passed is
// answered CANCELLED / DEADLINE_EXCEEDED without computing (at the next NextBatch/Sweep). ShouldStop()
// tells a running batch that all its tasks are cancelled/expired (or the scheduler aborts), so the worker
// can stop mid-forward; tasks still wanted in a batch keep running.
//
// Thread safety: all methods are thread-safe. FinishFn is called without internal locks held, on the
// thread of the call that finished the task (Schedule never finishes a task).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/batching/clock.h"

namespace reformer::serving {

struct SchedulerOptions {
  int64_t max_batch_tokens = 65536;              // tokens per batch
  int64_t max_batch_size = 32;                   // documents per batch
  size_t memory_budget_bytes = size_t{4} << 30;  // memory estimate bound per batch
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  int64_t max_queue_requests = 1024;             // queued (not yet started) requests
  int64_t max_queue_tokens = 4 << 20;            // queued (not yet started) document tokens
  int64_t max_tokens_per_request = 65536;        // sum over a request's documents
  int64_t max_document_tokens = 65536;           // model context (max_position_embeddings)
  int num_workers = 1;                           // workers calling NextBatch concurrently
  int64_t long_batch_tokens = 16384;             // batches above this are "long"; 0 = no reservation
  double length_ratio = 4.0;                     // max/min document length within a batch (>= 1)
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
  size_t estimated_bytes = 0;
  bool long_batch = false;
  std::vector<int64_t> lengths() const;
};

class BatchScheduler {
 public:
  using FinishFn = std::function<void(std::unique_ptr<BatchTask> task, absl::Status status,
                                      const TaskTiming& timing)>;
  // Peak working bytes of running documents with these lengths as one batch (engine estimate).
  using MemoryEstimateFn = std::function<size_t(absl::Span<const int64_t> lengths, uint32_t batch_key)>;

  // `clock` is borrowed and must outlive the scheduler. `estimate` may be null (no memory bound).
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(const SchedulerOptions& options,
                                                                MemoryEstimateFn estimate,
                                                                const Clock* clock, FinishFn finish);
  // Tasks still queued or running are answered UNAVAILABLE if Abort() was not called.
  ~BatchScheduler();

  // On OK takes ownership (`*task` becomes null) and the task will be finished exactly once.
  // On error `*task` is untouched and FinishFn is never called for it. `reject_reason` (optional)
  // gets a metrics label: "invalid", "too_large", "queue_full", "draining".
  absl::Status Schedule(std::unique_ptr<BatchTask>* task, std::string* reject_reason = nullptr);

  // Answers cancelled/expired queued tasks, then returns a batch that is ready now, or null. The
  // caller must call Complete() exactly once for every batch returned.
  std::unique_ptr<Batch> NextBatch();

  // Reports the outcome of each item of `batch` (same order). A failed document fails its task
  // (its other queued documents are dropped); the first error is the task's answer.
  void Complete(const Batch& batch, absl::Span<const absl::Status> results);

  // Answers cancelled/expired queued tasks. Returns how many were answered.
  int Sweep();

  // True when every task of `batch` is cancelled or expired, or after Abort():
  // the worker may stop computing. Cheap (no lock); call it from the engine's cancel callback.
  bool ShouldStop(const Batch& batch) const;
  // The answer for an item whose computation was stopped: CANCELLED, DEADLINE_EXCEEDED or the
  // abort status.
  absl::Status StopStatus(const BatchItem& item) const;

  // The earliest future time at which a queued task's deadline passes or the head's queue delay
  // ends (InfiniteFuture when nothing is queued). Cancellation flags are not signalled: poll.
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
  const SchedulerOptions& options() const { return options_; }

 private:
  struct TaskState;
  struct QueuedDoc {
    int rank;           // priority class: explicit levels first, 0 (default) last
    uint64_t ticket;    // arrival order
    int document;
    bool operator<(const QueuedDoc& o) const {
      return std::tie(rank, ticket, document) < std::tie(o.rank, o.ticket, o.document);
    }
  };
  struct Finished {
    std::unique_ptr<BatchTask> task;
    absl::Status status;
    TaskTiming timing;
  };

  BatchScheduler(const SchedulerOptions& options, MemoryEstimateFn estimate, const Clock* clock,
                 FinishFn finish);

  absl::Status CheckAdmission(const BatchTask& task, std::string* reason) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool TaskStopped(const BatchTask& task, absl::Time now) const;
  absl::Status TaskStopStatus(const BatchTask& task, absl::Time now) const;
  // Drops the queued documents of `state`, recording `status` as its answer if it has none.
  void FailTask(TaskState* state, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves finished tasks (nothing queued, nothing running) to `out`.
  void MaybeFinish(uint64_t ticket, absl::Time now, std::vector<Finished>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLocked(absl::Time now, std::vector<Finished>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<Batch> FormBatch(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Deliver(std::vector<Finished>* finished);

  const SchedulerOptions options_;
  const MemoryEstimateFn estimate_;
  const Clock* const clock_;
  const FinishFn finish_;

  mutable absl::Mutex mu_;
  std::map<uint64_t, std::unique_ptr<TaskState>> tasks_ ABSL_GUARDED_BY(mu_);
  std::map<QueuedDoc, int64_t> queue_ ABSL_GUARDED_BY(mu_);  // → tokens
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_batch_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t queued_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_batches_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_long_batches_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> aborted_{false};
  absl::Status abort_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reformer::serving
