#include "server/batching/sequence_queue.h"

#include <algorithm>
#include <climits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace reformer::serving {

absl::Status SequenceQueueOptions::Validate() const {
  if (max_waiting < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--generate_max_waiting must be >= 1, got ", max_waiting));
  }
  if (priority_aging < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("the priority aging time must be >= 0, got ",
                                                   absl::FormatDuration(priority_aging)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SequenceQueue>> SequenceQueue::Create(
    const SequenceQueueOptions& options, std::shared_ptr<MemoryBudget> budget, const Clock* clock,
    FinishFn finish) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (budget == nullptr || clock == nullptr || !finish) {
    return absl::InvalidArgumentError("SequenceQueue needs a budget, a clock and a finish callback");
  }
  return std::unique_ptr<SequenceQueue>(
      new SequenceQueue(options, std::move(budget), clock, std::move(finish)));
}

SequenceQueue::SequenceQueue(const SequenceQueueOptions& options,
                             std::shared_ptr<MemoryBudget> budget, const Clock* clock,
                             FinishFn finish)
    : options_(options), budget_(std::move(budget)), clock_(clock), finish_(std::move(finish)) {}

SequenceQueue::~SequenceQueue() { Abort(absl::UnavailableError("the server is shutting down")); }

int64_t SequenceQueue::Rank(int priority) { return priority <= 0 ? INT64_MAX : priority; }

absl::Status SequenceQueue::Admit(std::unique_ptr<SequenceTask>* task, std::string* reason) {
  auto label = [reason](const char* r) {
    if (reason != nullptr) *reason = r;
  };
  SequenceTask& t = **task;
  const size_t total = budget_->total_bytes();
  const size_t room = total - std::min(total, options_.held_for_life_bytes);
  if (t.total_bytes() > room) {
    label("too_large");
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the generation needs %d bytes (decoding cache %d, working memory of its forwards %d + "
        "%d), above the %d bytes a sequence can ever have: the server's memory budget of %d bytes "
        "(--memory_budget_bytes) less %d held by the generation workers' step buffers; use a "
        "shorter prompt or fewer max_new_tokens",
        t.total_bytes(), t.cache_bytes, t.prefill_bytes, t.working_bytes, room, total,
        options_.held_for_life_bytes));
  }
  absl::MutexLock lock(&mu_);
  if (draining_) {
    label("draining");
    return absl::UnavailableError(
        "the server is shutting down and accepts no new requests; retry on another replica");
  }
  if (static_cast<int64_t>(tasks_.size()) >= options_.max_waiting) {
    label("queue_full");
    return absl::UnavailableError(absl::StrCat("the generation queue is full: ", tasks_.size(),
                                               " requests wait (--generate_max_waiting=",
                                               options_.max_waiting, "); retry later"));
  }
  t.enqueued = clock_->Now();
  const uint64_t ticket = next_ticket_++;
  order_.insert({Rank(t.priority), ticket});
  waiting_tokens_ += t.prompt_tokens;
  tasks_.emplace(ticket, std::move(*task));
  return absl::OkStatus();
}

uint64_t SequenceQueue::HeadLocked(absl::Time now) const {
  if (tasks_.empty()) return 0;
  const auto& [oldest, task] = *tasks_.begin();
  if (now - task->enqueued >= options_.priority_aging) return oldest;
  return order_.begin()->second;
}

std::unique_ptr<SequenceTask> SequenceQueue::RemoveLocked(uint64_t ticket) {
  auto it = tasks_.find(ticket);
  std::unique_ptr<SequenceTask> task = std::move(it->second);
  tasks_.erase(it);
  order_.erase({Rank(task->priority), ticket});
  waiting_tokens_ -= task->prompt_tokens;
  return task;
}

absl::Status SequenceQueue::StopStatus(const SequenceTask& task, absl::Time now) const {
  if (task.cancelled != nullptr && task.cancelled->load(std::memory_order_relaxed)) {
    return absl::CancelledError("the generation was cancelled before it started");
  }
  if (now >= task.deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the deadline passed after ", absl::FormatDuration(now - task.enqueued),
        " in the generation queue (waiting for memory or a free decoding slot)"));
  }
  return absl::OkStatus();
}

void SequenceQueue::SweepLocked(absl::Time now, std::vector<Finished>* out) {
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    absl::Status status = StopStatus(*it->second, now);
    const uint64_t ticket = it->first;
    ++it;
    if (!status.ok()) out->push_back({RemoveLocked(ticket), std::move(status)});
  }
}

std::vector<std::unique_ptr<SequenceTask>> SequenceQueue::Start(int64_t max_sequences,
                                                                int64_t max_tokens) {
  std::vector<std::unique_ptr<SequenceTask>> started;
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    int64_t tokens = 0;
    while (static_cast<int64_t>(started.size()) < max_sequences) {
      const uint64_t head = HeadLocked(now);
      if (head == 0) break;
      SequenceTask& t = *tasks_.at(head);
      if (absl::Status s = StopStatus(t, now); !s.ok()) {
        finished.push_back({RemoveLocked(head), std::move(s)});
        continue;
      }
      if (!started.empty() && tokens + t.prompt_tokens > max_tokens) break;
      std::optional<MemoryReservation> all = budget_->TryReserve(t.total_bytes(), MemoryKind::kWorking);
      if (!all) break;  // the head waits for memory; nobody overtakes it
      t.cache_memory = all->Split(t.cache_bytes, MemoryKind::kCache);
      t.prefill_memory = all->Split(t.prefill_bytes, MemoryKind::kWorking);
      t.working_memory = std::move(*all);
      t.started = now;
      tokens += t.prompt_tokens;
      started.push_back(RemoveLocked(head));
    }
  }
  Deliver(&finished);
  return started;
}

int SequenceQueue::Sweep() {
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    SweepLocked(clock_->Now(), &finished);
  }
  const int n = static_cast<int>(finished.size());
  Deliver(&finished);
  return n;
}

absl::Time SequenceQueue::NextWakeup() const {
  absl::MutexLock lock(&mu_);
  absl::Time wake = absl::InfiniteFuture();
  if (tasks_.empty()) return wake;
  const absl::Time aged = tasks_.begin()->second->enqueued + options_.priority_aging;
  if (aged > clock_->Now()) wake = aged;
  for (const auto& [ticket, task] : tasks_) wake = std::min(wake, task->deadline);
  return wake;
}

void SequenceQueue::StartDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

void SequenceQueue::Abort(const absl::Status& status) {
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    while (!tasks_.empty()) finished.push_back({RemoveLocked(tasks_.begin()->first), status});
  }
  Deliver(&finished);
}

void SequenceQueue::Deliver(std::vector<Finished>* finished) {
  for (Finished& f : *finished) finish_(std::move(f.task), std::move(f.status));
  finished->clear();
}

int64_t SequenceQueue::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(tasks_.size());
}

int64_t SequenceQueue::waiting_tokens() const {
  absl::MutexLock lock(&mu_);
  return waiting_tokens_;
}

}  // namespace reformer::serving
