// SequenceQueue: admission of generation sequences (issue 12's continuous batching). No threads, no
// gRPC, no engine: time comes from an injected Clock and the caller drives it (Admit, Start, Sweep),
// so tests run on a FakeClock without sleeps. server/inference/generation_service.h runs it with
// worker threads, each stepping its started sequences together.
//
// A sequence needs memory for its whole life (its decoding cache, exactly DecodeState::EstimateBytes,
// kind kCache; and for a recompute-mode sequence the working memory of the forward each of its steps
// runs, kind kWorking) and, for its prompt pass only, the forward's working memory (kind kWorking).
// All of it comes from the process-wide MemoryBudget (memory_budget.h) shared with ModelInfer,
// Score and Embed.
//
// Order. Waiting sequences start by priority class (1 = highest, 2, ..., and 0 = "default", which
// ranks below every explicit level), then arrival; a sequence that has waited `priority_aging` is
// started first among those (by arrival), so no priority starves.
//
// Admission (Admit), every message carrying the numbers:
//   RESOURCE_EXHAUSTED  the sequence's memory (cache + its forward's working memory) can never fit
//                       the budget's total less what is held for life (held_for_life_bytes);
//   UNAVAILABLE         draining / shut down, or `max_waiting` sequences already wait.
// Start(n, tokens) starts waiting sequences in order while the head's memory fits what is free now,
// at most n of them and (beyond the first) prompts of at most `tokens` tokens together. A head that
// does not fit waits for memory to be released (nothing fails, nothing is swapped, and smaller
// sequences behind it do not overtake it, so it cannot starve); MemoryBudget::Listener tells the
// caller when to look again. The reservations move into the task (SequenceTask::cache_memory,
// working_memory, prefill_memory); destroying the task returns them, so a sequence that ends frees its
// memory at once.
//
// Deadlines and cancellation of waiting sequences: Sweep() (and Start) answer a waiting sequence
// whose deadline has passed (DEADLINE_EXCEEDED) or whose cancel flag is set (CANCELLED) through
// FinishFn, without starting it; Sweep reads every waiting sequence's flag (at most max_waiting).
// Started sequences are the caller's: it checks their flags before every step.
//
// Thread safety: all methods are thread-safe; FinishFn is called without the queue's lock held, on
// the thread of the call that ended the task. Memory is never released under the lock (budget
// listeners may call back into the caller).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batching/clock.h"
#include "server/batching/memory_budget.h"

namespace reformer::serving {

struct SequenceQueueOptions {
  int64_t max_waiting = 1024;  // sequences admitted and not yet started
  // A sequence waiting this long starts before any other (by arrival); InfiniteDuration() = strict
  // priorities.
  absl::Duration priority_aging = absl::Seconds(10);
  // Bytes of the budget its users hold for their whole life (e.g. generation workers' step
  // buffers): never available to a sequence, so a sequence needing more than total - this can
  // never start and is refused at admission.
  size_t held_for_life_bytes = 0;
  absl::Status Validate() const;
};

// One generation sequence as the queue sees it. Subclass it for the payload; the fields above the
// line must not change after Admit().
struct SequenceTask {
  virtual ~SequenceTask() = default;
  int64_t prompt_tokens = 1;
  int priority = 0;  // 0 = default (lowest); 1 = highest, larger = lower
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled;  // may be null
  size_t cache_bytes = 0;    // held from start to end (kCache)
  size_t working_bytes = 0;  // held from start to end (kWorking): e.g. recompute-mode forwards
  size_t prefill_bytes = 0;  // held for the prompt pass (kWorking); the caller releases it after
  // ---- Written by the queue.
  absl::Time enqueued;
  absl::Time started = absl::InfiniteFuture();
  MemoryReservation cache_memory;
  MemoryReservation working_memory;
  MemoryReservation prefill_memory;

  size_t total_bytes() const { return cache_bytes + working_bytes + prefill_bytes; }
};

class SequenceQueue {
 public:
  // Ends a task that never started (deadline, cancellation, Abort): its status is not OK.
  using FinishFn = std::function<void(std::unique_ptr<SequenceTask> task, absl::Status status)>;

  // `clock` is borrowed; `budget` is required.
  static absl::StatusOr<std::unique_ptr<SequenceQueue>> Create(const SequenceQueueOptions& options,
                                                               std::shared_ptr<MemoryBudget> budget,
                                                               const Clock* clock, FinishFn finish);
  // Waiting tasks are answered UNAVAILABLE unless Abort() already answered them.
  ~SequenceQueue();

  // On OK takes ownership (`*task` becomes null). On error `*task` is untouched and FinishFn is
  // never called for it. `reason` (optional) gets a metrics label: "too_large", "queue_full",
  // "draining".
  absl::Status Admit(std::unique_ptr<SequenceTask>* task, std::string* reason = nullptr);

  // Starts up to `max_sequences` waiting tasks (see the class comment); the tokens of all but the
  // first stay within `max_tokens`. Expired and cancelled ones met on the way are answered.
  std::vector<std::unique_ptr<SequenceTask>> Start(int64_t max_sequences, int64_t max_tokens);

  // Answers waiting tasks whose deadline passed or whose cancel flag is set; returns how many.
  int Sweep();
  // The earliest time at which a waiting task's deadline passes or a task ages (InfiniteFuture when
  // nothing waits). Memory releases are not time events: listen to the budget.
  absl::Time NextWakeup() const;

  // New Admit() calls fail UNAVAILABLE; waiting tasks still start.
  void StartDraining();
  // Answers every waiting task with `status` now. Implies StartDraining().
  void Abort(const absl::Status& status);

  int64_t waiting() const;
  int64_t waiting_tokens() const;
  const std::shared_ptr<MemoryBudget>& budget() const { return budget_; }

 private:
  struct Finished {
    std::unique_ptr<SequenceTask> task;
    absl::Status status;
  };
  using Key = std::pair<int64_t, uint64_t>;  // (rank, ticket)

  SequenceQueue(const SequenceQueueOptions& options, std::shared_ptr<MemoryBudget> budget,
                const Clock* clock, FinishFn finish);
  static int64_t Rank(int priority);
  // The next task to start (aged first, else by rank), or 0 when none waits.
  uint64_t HeadLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<SequenceTask> RemoveLocked(uint64_t ticket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The reason a waiting task must end now, or OK.
  absl::Status StopStatus(const SequenceTask& task, absl::Time now) const;
  void SweepLocked(absl::Time now, std::vector<Finished>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Deliver(std::vector<Finished>* finished);

  const SequenceQueueOptions options_;
  const std::shared_ptr<MemoryBudget> budget_;
  const Clock* const clock_;
  const FinishFn finish_;

  mutable absl::Mutex mu_;
  std::map<uint64_t, std::unique_ptr<SequenceTask>> tasks_ ABSL_GUARDED_BY(mu_);  // by arrival
  std::set<Key> order_ ABSL_GUARDED_BY(mu_);
  int64_t waiting_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace reformer::serving
