#include "server/batching/batch_scheduler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"

namespace reformer::serving {

struct BatchScheduler::TaskState {
  std::unique_ptr<BatchTask> task;
  uint64_t ticket = 0;
  int rank = 0;
  absl::Time enqueued;
  absl::Time started = absl::InfiniteFuture();
  int queued_docs = 0;
  int running_docs = 0;
  int64_t done_tokens = 0;
  absl::Status status;  // first failure; OK while everything went well
};

namespace {

// Priority 1 is the highest; 0 (default) ranks below every explicit level.
int RankOf(int priority) { return priority <= 0 ? INT_MAX : priority; }

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

absl::Status SchedulerOptions::Validate() const {
  if (max_batch_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_batch_tokens must be >= 1, got %d", max_batch_tokens));
  }
  if (max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_batch_size must be >= 1, got %d", max_batch_size));
  }
  if (memory_budget_bytes == 0) return absl::InvalidArgumentError("memory_budget_bytes must be > 0");
  if (max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_queue_delay must be >= 0");
  }
  if (max_queue_requests < 1 || max_queue_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_queue_requests (%d) and max_queue_tokens (%d) must be >= 1", max_queue_requests, max_queue_tokens));
  }
  if (max_tokens_per_request < 1 || max_document_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens_per_request (%d) and max_document_tokens (%d) must be >= 1",
                        max_tokens_per_request, max_document_tokens));
  }
  if (num_workers < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("num_workers must be >= 1, got %d", num_workers));
  }
  if (long_batch_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("long_batch_tokens must be >= 0, got %d", long_batch_tokens));
  }
  if (!(length_ratio >= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("length_ratio must be >= 1, got %g", length_ratio));
  }
  return absl::OkStatus();
}

std::vector<int64_t> Batch::lengths() const {
  std::vector<int64_t> out;
  out.reserve(items.size());
  for (const BatchItem& item : items) out.push_back(item.tokens);
  return out;
}

absl::StatusOr<std::unique_ptr<BatchScheduler>> BatchScheduler::Create(const SchedulerOptions& options,
                                                                       MemoryEstimateFn estimate,
                                                                       const Clock* clock, FinishFn finish) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("BatchScheduler needs a clock");
  if (!finish) return absl::InvalidArgumentError("BatchScheduler needs a finish callback");
  return std::unique_ptr<BatchScheduler>(
      new BatchScheduler(options, std::move(estimate), clock, std::move(finish)));
}

BatchScheduler::BatchScheduler(const SchedulerOptions& options, MemoryEstimateFn estimate, const Clock* clock,
                               FinishFn finish)
    : options_(options), estimate_(std::move(estimate)), clock_(clock), finish_(std::move(finish)) {}

BatchScheduler::~BatchScheduler() {
  // The owner must have completed every batch; whatever is still unanswered is answered here so that
  // every accepted task gets exactly one answer.
  Abort(absl::UnavailableError("scheduler shut down"));
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto& [ticket, state] : tasks_) {
      Finished f;
      f.status = state->status.ok() ? absl::UnavailableError("scheduler shut down") : state->status;
      f.timing.enqueued = state->enqueued;
      f.timing.finished = now;
      f.timing.queue_seconds = Seconds(now - state->enqueued);
      f.task = std::move(state->task);
      finished.push_back(std::move(f));
    }
    tasks_.clear();
  }
  Deliver(&finished);
}

absl::Status BatchScheduler::CheckAdmission(const BatchTask& task, std::string* reason) const {
  if (draining_) {
    *reason = "draining";
    return absl::UnavailableError("the server is draining and accepts no new requests; retry on another replica");
  }
  *reason = "invalid";
  if (task.lengths.empty()) return absl::InvalidArgumentError("the request has no documents");
  if (task.priority < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("priority must be >= 0 (0 = default, 1 = highest), got %d", task.priority));
  }
  int64_t total = 0;
  for (size_t d = 0; d < task.lengths.size(); ++d) {
    const int64_t len = task.lengths[d];
    if (len < 1) {
      return absl::InvalidArgumentError(absl::StrFormat("document %d is empty", d));
    }
    if (len > options_.max_document_tokens) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "document %d has %d tokens, more than the model's context of %d tokens (max_position_embeddings)", d,
          len, options_.max_document_tokens));
    }
    total += len;
  }
  if (total > options_.max_tokens_per_request) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the request has %d tokens in %d documents, more than --max_tokens_per_request=%d", total,
                        task.lengths.size(), options_.max_tokens_per_request));
  }
  *reason = "too_large";
  for (size_t d = 0; d < task.lengths.size(); ++d) {
    const int64_t len = task.lengths[d];
    if (len > options_.max_batch_tokens) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "document %d has %d tokens, more than a batch can ever hold (--max_batch_tokens=%d)", d, len,
          options_.max_batch_tokens));
    }
    if (estimate_) {
      const int64_t one[1] = {len};
      const size_t bytes = estimate_(absl::MakeConstSpan(one), task.batch_key);
      if (bytes > options_.memory_budget_bytes) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "document %d (%d tokens) needs an estimated %d bytes of working memory, more than "
            "--memory_budget_bytes=%d",
            d, len, bytes, options_.memory_budget_bytes));
      }
    }
  }
  if (total > options_.max_queue_tokens) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the request has %d tokens, more than the queue can ever hold (--max_queue_tokens=%d)", total,
        options_.max_queue_tokens));
  }
  *reason = "queue_full";
  if (queued_requests_ + 1 > options_.max_queue_requests) {
    return absl::UnavailableError(absl::StrFormat("the queue is full: %d requests queued (--max_queue_requests=%d)",
                                                  queued_requests_, options_.max_queue_requests));
  }
  if (queued_tokens_ + total > options_.max_queue_tokens) {
    return absl::UnavailableError(
        absl::StrFormat("the queue is full: %d tokens queued + %d requested > --max_queue_tokens=%d",
                        queued_tokens_, total, options_.max_queue_tokens));
  }
  reason->clear();
  return absl::OkStatus();
}

absl::Status BatchScheduler::Schedule(std::unique_ptr<BatchTask>* task, std::string* reject_reason) {
  if (task == nullptr || *task == nullptr) return absl::InvalidArgumentError("Schedule: null task");
  std::string reason;
  absl::MutexLock lock(&mu_);
  absl::Status status = CheckAdmission(**task, &reason);
  if (!status.ok()) {
    if (reject_reason != nullptr) *reject_reason = reason;
    return status;
  }
  auto state = std::make_unique<TaskState>();
  state->ticket = next_ticket_++;
  state->rank = RankOf((*task)->priority);
  state->enqueued = clock_->Now();
  state->task = std::move(*task);
  const std::vector<int64_t>& lengths = state->task->lengths;
  for (size_t d = 0; d < lengths.size(); ++d) {
    queue_.emplace(QueuedDoc{state->rank, state->ticket, static_cast<int>(d)}, lengths[d]);
    queued_tokens_ += lengths[d];
  }
  state->queued_docs = static_cast<int>(lengths.size());
  ++queued_requests_;
  tasks_.emplace(state->ticket, std::move(state));
  return absl::OkStatus();
}

bool BatchScheduler::TaskStopped(const BatchTask& task, absl::Time now) const {
  return (task.cancelled != nullptr && task.cancelled->load(std::memory_order_relaxed)) || task.deadline <= now;
}

absl::Status BatchScheduler::TaskStopStatus(const BatchTask& task, absl::Time now) const {
  if (task.cancelled != nullptr && task.cancelled->load(std::memory_order_relaxed)) {
    return absl::CancelledError("the request was cancelled");
  }
  if (task.deadline <= now) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "the request's deadline passed (%s ago)", absl::FormatDuration(now - task.deadline)));
  }
  return absl::OkStatus();
}

void BatchScheduler::FailTask(TaskState* state, const absl::Status& status) {
  if (state->status.ok()) state->status = status;
  if (state->queued_docs == 0) return;
  auto it = queue_.lower_bound(QueuedDoc{state->rank, state->ticket, 0});
  while (it != queue_.end() && it->first.ticket == state->ticket) {
    queued_tokens_ -= it->second;
    it = queue_.erase(it);
  }
  state->queued_docs = 0;
  --queued_requests_;
}

void BatchScheduler::MaybeFinish(uint64_t ticket, absl::Time now, std::vector<Finished>* out) {
  auto it = tasks_.find(ticket);
  if (it == tasks_.end()) return;
  TaskState& state = *it->second;
  if (state.queued_docs > 0 || state.running_docs > 0) return;
  Finished f;
  f.status = state.status;
  if (f.status.ok() && state.task->cancelled != nullptr && state.task->cancelled->load()) {
    f.status = absl::CancelledError("the request was cancelled");
  }
  f.timing.enqueued = state.enqueued;
  f.timing.started = state.started;
  f.timing.finished = now;
  f.timing.tokens = state.done_tokens;
  if (state.started == absl::InfiniteFuture()) {
    f.timing.queue_seconds = Seconds(now - state.enqueued);
  } else {
    f.timing.queue_seconds = Seconds(state.started - state.enqueued);
    f.timing.compute_seconds = Seconds(now - state.started);
  }
  f.task = std::move(state.task);
  out->push_back(std::move(f));
  tasks_.erase(it);
}

void BatchScheduler::SweepLocked(absl::Time now, std::vector<Finished>* out) {
  std::vector<uint64_t> stopped;
  for (auto& [ticket, state] : tasks_) {
    if (state->queued_docs > 0 && TaskStopped(*state->task, now)) stopped.push_back(ticket);
  }
  for (uint64_t ticket : stopped) {
    TaskState* state = tasks_[ticket].get();
    FailTask(state, TaskStopStatus(*state->task, now));
    MaybeFinish(ticket, now, out);
  }
}

int BatchScheduler::Sweep() {
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    SweepLocked(clock_->Now(), &finished);
  }
  const int n = static_cast<int>(finished.size());
  Deliver(&finished);
  return n;
}

std::unique_ptr<Batch> BatchScheduler::FormBatch(absl::Time now) {
  if (queue_.empty()) return nullptr;
  const bool reserve = options_.num_workers >= 2 && options_.long_batch_tokens > 0 &&
                       running_long_batches_ >= options_.num_workers - 1;
  const int64_t token_cap =
      reserve ? std::min(options_.long_batch_tokens, options_.max_batch_tokens) : options_.max_batch_tokens;

  // Head: the first document in (priority, arrival) order this worker may run.
  auto head = queue_.end();
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->second <= token_cap) {
      head = it;
      break;
    }
  }
  if (head == queue_.end()) return nullptr;
  const TaskState& head_state = *tasks_.at(head->first.ticket);
  const uint32_t key = head_state.task->batch_key;
  const int64_t head_len = head->second;

  struct Candidate {
    int rank;
    double distance;
    QueuedDoc doc;
    int64_t tokens;
  };
  std::vector<Candidate> candidates;
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it == head || it->second > token_cap) continue;
    const TaskState& s = *tasks_.at(it->first.ticket);
    if (s.task->batch_key != key) continue;
    const double ratio = static_cast<double>(std::max(it->second, head_len)) / std::min(it->second, head_len);
    if (ratio > options_.length_ratio) continue;
    candidates.push_back(Candidate{it->first.rank, std::abs(std::log(ratio)), it->first, it->second});
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.rank, a.distance, a.doc) < std::tie(b.rank, b.distance, b.doc);
  });

  auto batch = std::make_unique<Batch>();
  batch->batch_key = key;
  std::vector<QueuedDoc> chosen = {head->first};
  std::vector<int64_t> lengths = {head_len};
  int64_t tokens = head_len;
  int64_t min_len = head_len, max_len = head_len;
  size_t bytes = estimate_ ? estimate_(absl::MakeConstSpan(lengths), key) : 0;
  bool full = tokens >= token_cap;
  for (const Candidate& c : candidates) {
    if (static_cast<int64_t>(chosen.size()) >= options_.max_batch_size) break;
    if (tokens + c.tokens > token_cap) {
      full = true;
      continue;
    }
    const int64_t lo = std::min(min_len, c.tokens), hi = std::max(max_len, c.tokens);
    if (static_cast<double>(hi) / lo > options_.length_ratio) continue;
    size_t new_bytes = 0;
    if (estimate_) {
      lengths.push_back(c.tokens);
      new_bytes = estimate_(absl::MakeConstSpan(lengths), key);
      if (new_bytes > options_.memory_budget_bytes) {
        lengths.pop_back();
        full = true;
        continue;
      }
    } else {
      lengths.push_back(c.tokens);
    }
    chosen.push_back(c.doc);
    tokens += c.tokens;
    bytes = new_bytes;
    min_len = lo;
    max_len = hi;
  }
  if (static_cast<int64_t>(chosen.size()) >= options_.max_batch_size || tokens >= token_cap) full = true;
  const bool ready = full || draining_ || now >= head_state.enqueued + options_.max_queue_delay;
  if (!ready) return nullptr;

  batch->id = next_batch_id_++;
  batch->tokens = tokens;
  batch->estimated_bytes = bytes;
  batch->long_batch = options_.long_batch_tokens > 0 && tokens > options_.long_batch_tokens;
  for (const QueuedDoc& doc : chosen) {
    auto qit = queue_.find(doc);
    const int64_t len = qit->second;
    queue_.erase(qit);
    queued_tokens_ -= len;
    TaskState& s = *tasks_.at(doc.ticket);
    if (--s.queued_docs == 0) --queued_requests_;
    ++s.running_docs;
    if (s.started == absl::InfiniteFuture()) s.started = now;
    batch->items.push_back(BatchItem{s.task.get(), doc.document, len, doc.ticket});
  }
  ++running_batches_;
  if (batch->long_batch) ++running_long_batches_;
  return batch;
}

std::unique_ptr<Batch> BatchScheduler::NextBatch() {
  std::vector<Finished> finished;
  std::unique_ptr<Batch> batch;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    SweepLocked(now, &finished);
    if (!aborted_.load()) batch = FormBatch(now);
  }
  Deliver(&finished);
  return batch;
}

void BatchScheduler::Complete(const Batch& batch, absl::Span<const absl::Status> results) {
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    --running_batches_;
    if (batch.long_batch) --running_long_batches_;
    std::vector<uint64_t> tickets;
    for (size_t i = 0; i < batch.items.size(); ++i) {
      const BatchItem& item = batch.items[i];
      auto it = tasks_.find(item.ticket);
      if (it == tasks_.end()) continue;  // cannot happen: a task with running documents stays
      TaskState* state = it->second.get();
      --state->running_docs;
      const absl::Status& result =
          i < results.size() ? results[i] : absl::InternalError("Complete: missing result for a batch item");
      if (result.ok()) {
        state->done_tokens += item.tokens;
      } else {
        FailTask(state, result);
      }
      tickets.push_back(item.ticket);
    }
    for (uint64_t ticket : tickets) MaybeFinish(ticket, now, &finished);
  }
  Deliver(&finished);
}

bool BatchScheduler::ShouldStop(const Batch& batch) const {
  if (aborted_.load(std::memory_order_relaxed)) return true;
  const absl::Time now = clock_->Now();
  for (const BatchItem& item : batch.items) {
    if (!TaskStopped(*item.task, now)) return false;
  }
  return true;
}

absl::Status BatchScheduler::StopStatus(const BatchItem& item) const {
  absl::Status status = TaskStopStatus(*item.task, clock_->Now());
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  if (!abort_status_.ok()) return abort_status_;
  return absl::CancelledError("the computation was stopped");
}

absl::Time BatchScheduler::NextWakeup() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  absl::Time wake = absl::InfiniteFuture();
  for (const auto& [ticket, state] : tasks_) {
    if (state->queued_docs == 0) continue;
    const absl::Time due = state->enqueued + options_.max_queue_delay;
    if (due > now) wake = std::min(wake, due);
    if (state->task->deadline > now) wake = std::min(wake, state->task->deadline);
  }
  return wake;
}

void BatchScheduler::StartDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

void BatchScheduler::Abort(const absl::Status& status) {
  std::vector<Finished> finished;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    if (abort_status_.ok()) {
      abort_status_ = status.ok() ? absl::UnavailableError("aborted") : status;
    }
    aborted_.store(true);
    const absl::Time now = clock_->Now();
    std::vector<uint64_t> queued;
    for (auto& [ticket, state] : tasks_) {
      if (state->queued_docs > 0) queued.push_back(ticket);
    }
    for (uint64_t ticket : queued) {
      TaskState* state = tasks_[ticket].get();
      absl::Status stop = TaskStopStatus(*state->task, now);
      FailTask(state, stop.ok() ? abort_status_ : stop);
      MaybeFinish(ticket, now, &finished);
    }
  }
  Deliver(&finished);
}

void BatchScheduler::Deliver(std::vector<Finished>* finished) {
  for (Finished& f : *finished) finish_(std::move(f.task), std::move(f.status), f.timing);
  finished->clear();
}

int64_t BatchScheduler::queued_requests() const {
  absl::MutexLock lock(&mu_);
  return queued_requests_;
}
int64_t BatchScheduler::queued_tokens() const {
  absl::MutexLock lock(&mu_);
  return queued_tokens_;
}
int64_t BatchScheduler::inflight_requests() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(tasks_.size());
}
int64_t BatchScheduler::running_batches() const {
  absl::MutexLock lock(&mu_);
  return running_batches_;
}
bool BatchScheduler::Idle() const {
  absl::MutexLock lock(&mu_);
  return tasks_.empty() && running_batches_ == 0;
}

}  // namespace reformer::serving
