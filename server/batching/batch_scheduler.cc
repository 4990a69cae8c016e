#include "server/batching/batch_scheduler.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace reformer::serving {

struct BatchScheduler::TaskState {
  std::unique_ptr<BatchTask> task;
  uint64_t ticket = 0;
  int rank = 0;
  absl::Time enqueued;
  absl::Time started = absl::InfiniteFuture();
  int queued_docs = 0;
  int short_docs = 0;  // queued documents in the short index
  int running_docs = 0;
  int64_t done_tokens = 0;
  absl::Status status;  // first failure; OK while everything went well
  Need need;
  bool outputs_reserved = false;  // a document entered a batch: need.outputs are reserved
  bool started_listed = false;    // in started_queued_ / started_working_
  uint64_t plan = 0;              // the plan being formed that would reserve its outputs
};

// A batch being formed: nothing is changed until Commit().
struct BatchScheduler::Plan {
  uint64_t id = 0;
  int64_t cap = 0;             // token cap of this batch
  bool started_only = false;   // only documents of requests whose outputs are reserved
  size_t free = SIZE_MAX;      // the budget's free bytes when planning began
  DocEntry head;
  std::vector<DocEntry> docs;
  std::vector<int64_t> lengths;
  int64_t tokens = 0, min_len = 0, max_len = 0;
  size_t working = 0;          // estimate of `lengths`
  size_t outputs = 0;          // outputs of the requests this batch starts
  size_t new_working = 0;      // largest longest_working among those that keep queued documents
  std::vector<TaskState*> starts;
  std::vector<uint64_t> cancelled;
  int64_t skips = 0;           // candidates passed over (cancelled, or not started in a fallback)
  bool full = false;           // a candidate did not fit
};

namespace {

// Priority 1 is the highest; 0 (default) ranks below every explicit level.
int RankOf(int priority) { return priority <= 0 ? INT_MAX : priority; }

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

size_t SatAdd(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

double Ratio(int64_t a, int64_t b) {
  return static_cast<double>(std::max(a, b)) / static_cast<double>(std::min(a, b));
}

// Documents of at most this many tokens go to the short index (0: no reservation, no index).
int64_t ShortTokens(const SchedulerOptions& o) {
  const bool reservation = o.num_workers >= 2 && o.long_batch_tokens > 0;
  return reservation && o.long_batch_tokens < o.max_batch_tokens ? o.long_batch_tokens : 0;
}

}  // namespace

absl::Status SchedulerOptions::Validate() const {
  if (max_batch_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_batch_tokens must be >= 1, got %d", max_batch_tokens));
  }
  if (max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_batch_size must be >= 1, got %d", max_batch_size));
  }
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
  if (batch_fill_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("batch_fill_tokens must be >= 0, got %d", batch_fill_tokens));
  }
  if (priority_aging < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("priority_aging must be >= 0, got ",
                                                   absl::FormatDuration(priority_aging)));
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
                                                                       Memory memory, const Clock* clock,
                                                                       FinishFn finish) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("BatchScheduler needs a clock");
  if (!finish) return absl::InvalidArgumentError("BatchScheduler needs a finish callback");
  return std::unique_ptr<BatchScheduler>(new BatchScheduler(options, std::move(memory), clock, std::move(finish)));
}

BatchScheduler::BatchScheduler(const SchedulerOptions& options, Memory memory, const Clock* clock, FinishFn finish)
    : options_(options),
      memory_(std::move(memory)),
      clock_(clock),
      finish_(std::move(finish)),
      queue_(ShortTokens(options), &ops_) {}

BatchScheduler::~BatchScheduler() {
  // The owner must have completed every batch; whatever is still unanswered is answered here so that
  // every accepted task gets exactly one answer.
  Abort(absl::UnavailableError("scheduler shut down"));
  std::vector<Finished> finished;
  std::map<uint64_t, MemoryReservation> running;
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
    running.swap(running_);
  }
  running.clear();  // released without the lock
  Deliver(&finished);
}

// --- Admission -------------------------------------------------------------------------------

absl::Status BatchScheduler::CheckRequest(const BatchTask& task, std::string* reason) const {
  *reason = "invalid";
  if (task.lengths.empty()) return absl::InvalidArgumentError("the request has no documents");
  if (task.priority < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("priority must be >= 0 (0 = default, 1 = highest), got %d", task.priority));
  }
  int64_t total = 0;
  for (size_t d = 0; d < task.lengths.size(); ++d) {
    const int64_t len = task.lengths[d];
    if (len < 1) return absl::InvalidArgumentError(absl::StrFormat("document %d is empty", d));
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
    if (task.lengths[d] > options_.max_batch_tokens) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "document %d has %d tokens, more than a batch can ever hold (--max_batch_tokens=%d)", d, task.lengths[d],
          options_.max_batch_tokens));
    }
  }
  if (total > options_.max_queue_tokens) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the request has %d tokens, more than the queue can ever hold (--max_queue_tokens=%d)", total,
        options_.max_queue_tokens));
  }
  reason->clear();
  return absl::OkStatus();
}

BatchScheduler::Need BatchScheduler::ComputeNeed(const BatchTask& task) const {
  Need need;
  for (size_t d = 0; d < task.lengths.size(); ++d) {
    if (task.lengths[d] > task.lengths[need.longest]) need.longest = static_cast<int>(d);
    if (memory_.output) need.outputs = SatAdd(need.outputs, memory_.output(task.lengths[d], task.batch_key));
  }
  if (task.response_bytes > 0) need.outputs = task.response_bytes;
  if (memory_.working) {
    const int64_t one[1] = {task.lengths[need.longest]};
    need.longest_working = memory_.working(absl::MakeConstSpan(one), task.batch_key);
  }
  return need;
}

absl::Status BatchScheduler::CheckMemory(const BatchTask& task, const Need& need, std::string* reason) const {
  if (memory_.budget == nullptr) return absl::OkStatus();
  const size_t total = memory_.budget->total_bytes();
  const int64_t longest = task.lengths[need.longest];
  *reason = "too_large";
  if (need.longest_working > total) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "document %d (%d tokens) needs an estimated %d bytes of working memory, more than "
        "--memory_budget_bytes=%d",
        need.longest, longest, need.longest_working, total));
  }
  if (SatAdd(need.outputs, need.longest_working) > total) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the request's outputs take %d bytes (%d documents) and its longest document (%d tokens) needs an "
        "estimated %d bytes of working memory: together more than --memory_budget_bytes=%d",
        need.outputs, task.lengths.size(), longest, need.longest_working, total));
  }
  reason->clear();
  return absl::OkStatus();
}

absl::Status BatchScheduler::CheckQueue(const BatchTask& task, std::string* reason) const {
  if (draining_) {
    *reason = "draining";
    return absl::UnavailableError("the server is draining and accepts no new requests; retry on another replica");
  }
  int64_t total = 0;
  for (int64_t len : task.lengths) total += len;
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
  absl::Status status = CheckRequest(**task, &reason);
  Need need;
  if (status.ok()) {
    need = ComputeNeed(**task);  // the estimates run without the lock
    status = CheckMemory(**task, need, &reason);
  }
  absl::MutexLock lock(&mu_);
  if (status.ok() || draining_) status = CheckQueue(**task, &reason);  // draining answers first
  if (!status.ok()) {
    if (reject_reason != nullptr) *reject_reason = reason;
    return status;
  }
  auto state = std::make_unique<TaskState>();
  state->ticket = next_ticket_++;
  state->rank = RankOf((*task)->priority);
  state->enqueued = clock_->Now();
  state->need = need;
  state->task = std::move(*task);
  Enqueue(std::move(state));
  return absl::OkStatus();
}

void BatchScheduler::Enqueue(std::unique_ptr<TaskState> owned) {
  TaskState* state = owned.get();
  tasks_.emplace(state->ticket, std::move(owned));
  const BatchTask& task = *state->task;
  for (size_t d = 0; d < task.lengths.size(); ++d) {
    queue_.Insert(DocEntry{state->rank, state->ticket, static_cast<int>(d), task.lengths[d], task.batch_key});
    queued_tokens_ += task.lengths[d];
    if (queue_.IsShort(task.lengths[d])) ++state->short_docs;
  }
  state->queued_docs = static_cast<int>(task.lengths.size());
  ++queued_requests_;
  fifo_.insert(state->ticket);
  if (state->short_docs > 0) fifo_short_.insert(state->ticket);
  enqueued_.insert({state->enqueued, state->ticket});
  if (task.deadline != absl::InfiniteFuture()) deadlines_.insert({task.deadline, state->ticket});
  ops_ += 5;
}

// --- Per-request bookkeeping -----------------------------------------------------------------

BatchScheduler::TaskState& BatchScheduler::StateOf(uint64_t ticket) const {
  ++ops_;
  return *tasks_.at(ticket);
}

bool BatchScheduler::Cancelled(const TaskState& state) const {
  const BatchTask& task = *state.task;
  return task.cancelled != nullptr && task.cancelled->load(std::memory_order_relaxed);
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

void BatchScheduler::TakeDocument(TaskState* state, const DocEntry& doc) {
  queue_.Erase(doc);
  queued_tokens_ -= doc.tokens;
  if (queue_.IsShort(doc.tokens) && --state->short_docs == 0) {
    fifo_short_.erase(state->ticket);
    ++ops_;
  }
  if (--state->queued_docs == 0) Dequeued(state);
}

void BatchScheduler::Dequeued(TaskState* state) {
  fifo_.erase(state->ticket);
  enqueued_.erase({state->enqueued, state->ticket});
  deadlines_.erase({state->task->deadline, state->ticket});
  ops_ += 3;
  if (state->started_listed) {
    started_queued_.erase(state->ticket);
    started_working_.erase(started_working_.find(state->need.longest_working));
    state->started_listed = false;
    ops_ += 2;
  }
  --queued_requests_;
}

void BatchScheduler::FailTask(TaskState* state, const absl::Status& status) {
  if (state->status.ok()) state->status = status;
  if (state->queued_docs == 0) return;
  std::vector<DocEntry> docs;
  queue_.TaskDocuments(state->rank, state->ticket, &docs);
  for (const DocEntry& doc : docs) TakeDocument(state, doc);
}

void BatchScheduler::Stop(uint64_t ticket, const absl::Status& status, absl::Time now, std::vector<Finished>* out) {
  ++ops_;
  auto it = tasks_.find(ticket);
  if (it == tasks_.end() || it->second->queued_docs == 0) return;
  FailTask(it->second.get(), status);
  MaybeFinish(ticket, now, out);
}

void BatchScheduler::MaybeFinish(uint64_t ticket, absl::Time now, std::vector<Finished>* out) {
  ++ops_;
  auto it = tasks_.find(ticket);
  if (it == tasks_.end()) return;
  TaskState& state = *it->second;
  if (state.queued_docs > 0 || state.running_docs > 0) return;
  if (state.outputs_reserved) started_outputs_ -= state.need.outputs;
  Finished f;
  f.status = state.status;
  if (f.status.ok() && Cancelled(state)) f.status = absl::CancelledError("the request was cancelled");
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

// --- Expiry and cancellation -----------------------------------------------------------------

void BatchScheduler::SweepLocked(absl::Time now, std::vector<Finished>* out) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const uint64_t ticket = deadlines_.begin()->second;
    Stop(ticket, TaskStopStatus(*StateOf(ticket).task, now), now, out);
  }
  PollCancelled(now, out);
}

// Round robin over every unanswered task, kCancelPollsPerSweep flags per call.
void BatchScheduler::PollCancelled(absl::Time now, std::vector<Finished>* out) {
  std::vector<uint64_t> cancelled;
  const size_t polls = std::min<size_t>(kCancelPollsPerSweep, tasks_.size());
  auto it = tasks_.upper_bound(poll_cursor_);
  ++ops_;
  for (size_t i = 0; i < polls; ++i, ++it) {
    if (it == tasks_.end()) it = tasks_.begin();
    poll_cursor_ = it->first;
    ++ops_;
    if (it->second->queued_docs > 0 && Cancelled(*it->second)) cancelled.push_back(it->first);
  }
  for (uint64_t ticket : cancelled) Stop(ticket, absl::CancelledError("the request was cancelled"), now, out);
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

// --- Batch formation -------------------------------------------------------------------------

std::optional<DocEntry> BatchScheduler::PickHead(absl::Time now, bool short_only, std::vector<Finished>* out) {
  while (true) {
    std::optional<DocEntry> head;
    const std::set<uint64_t>& fifo = short_only ? fifo_short_ : fifo_;
    if (!fifo.empty() && options_.priority_aging != absl::InfiniteDuration()) {
      const TaskState& oldest = StateOf(*fifo.begin());
      if (now - oldest.enqueued >= options_.priority_aging) {
        if (const DocEntry* doc = queue_.FirstOfTask(oldest.rank, oldest.ticket, short_only)) head = *doc;
      }
    }
    if (!head) {
      if (const DocEntry* doc = queue_.First(short_only)) head = *doc;
    }
    if (!head || !Cancelled(StateOf(head->ticket))) return head;
    Stop(head->ticket, absl::CancelledError("the request was cancelled"), now, out);
  }
}

std::optional<DocEntry> BatchScheduler::FallbackHead() const {
  if (started_queued_.empty()) return std::nullopt;
  const TaskState& state = StateOf(*started_queued_.begin());
  const DocEntry* doc = queue_.FirstOfTask(state.rank, state.ticket, /*short_only=*/false);
  if (doc == nullptr || Cancelled(state)) return std::nullopt;
  return *doc;
}

bool BatchScheduler::TryAdd(Plan* plan, TaskState* state, const DocEntry& doc) {
  const bool starts = !state->outputs_reserved && state->plan != plan->id;
  plan->lengths.push_back(doc.tokens);
  const size_t working = memory_.working ? memory_.working(absl::MakeConstSpan(plan->lengths), doc.key) : 0;
  const size_t outputs = SatAdd(plan->outputs, starts ? state->need.outputs : 0);
  size_t new_working = plan->new_working;
  if (starts && state->queued_docs > 1) new_working = std::max(new_working, state->need.longest_working);
  if (memory_.budget != nullptr) {
    bool fits = SatAdd(working, outputs) <= plan->free;
    if (fits && starts) {  // the no-deadlock rule (class comment)
      const size_t held = started_working_.empty() ? 0 : *started_working_.rbegin();
      fits = SatAdd(SatAdd(started_outputs_, outputs), std::max(held, new_working)) <= memory_.budget->total_bytes();
    }
    if (!fits) {
      plan->lengths.pop_back();
      return false;
    }
  }
  plan->working = working;
  plan->outputs = outputs;
  plan->new_working = new_working;
  if (starts) {
    state->plan = plan->id;
    plan->starts.push_back(state);
  }
  plan->min_len = plan->docs.empty() ? doc.tokens : std::min(plan->min_len, doc.tokens);
  plan->max_len = plan->docs.empty() ? doc.tokens : std::max(plan->max_len, doc.tokens);
  plan->docs.push_back(doc);
  plan->tokens += doc.tokens;
  return true;
}

// Adds batch mates from one class, closest length first. Returns false when the search must end.
bool BatchScheduler::WalkClass(Plan* plan, int rank, const LengthSet& docs) {
  const DocEntry& head = plan->head;
  const double ratio = options_.length_ratio;
  LengthWalk walk(docs, head.tokens, &ops_);
  bool up = false;
  while (static_cast<int64_t>(plan->docs.size()) < options_.max_batch_size) {
    const LenKey* c = walk.Peek(&up);
    if (c == nullptr) return true;
    const DocEntry doc{rank, c->ticket, c->document, c->tokens, head.key};
    const int64_t room = plan->cap - plan->tokens;
    if (rank == head.rank && doc.ticket == head.ticket && doc.document == head.document) {
      walk.Advance(up);
    } else if (Ratio(doc.tokens, head.tokens) > ratio) {
      walk.Stop(up);  // the next ones in this direction are further off
    } else if (doc.tokens > room) {
      plan->full = true;
      up ? walk.Stop(true) : walk.LimitDown(room);
    } else if (Ratio(std::max(plan->max_len, doc.tokens), std::min(plan->min_len, doc.tokens)) > ratio) {
      walk.Stop(up);  // the batch's span only grows: the next ones in this direction are out too
    } else {
      TaskState* state = &StateOf(doc.ticket);
      const bool cancelled = Cancelled(*state);
      if (cancelled || (plan->started_only && !state->outputs_reserved)) {
        if (cancelled) plan->cancelled.push_back(doc.ticket);
        walk.Advance(up);
        if (++plan->skips > options_.max_batch_size) return false;
      } else if (TryAdd(plan, state, doc)) {
        walk.Advance(up);
      } else {
        plan->full = true;  // does not fit the free memory; a longer one would not either
        walk.Stop(up);
      }
    }
  }
  return false;
}

bool BatchScheduler::PlanBatch(const DocEntry& head, Plan* plan) {
  plan->head = head;
  if (!TryAdd(plan, &StateOf(head.ticket), head)) return false;
  // Batch fill (class comment): batch mates only up to batch_fill_tokens; the head always fits.
  if (options_.batch_fill_tokens > 0) {
    plan->cap = std::max(head.tokens, std::min(plan->cap, options_.batch_fill_tokens));
  }
  int64_t classes = 0;
  for (auto cls = queue_.ClassesBegin(head.key); queue_.IsClassOf(cls, head.key); ++cls, ++ops_) {
    if (++classes > options_.max_batch_size) break;
    if (!WalkClass(plan, cls->first.second, cls->second)) break;
  }
  return true;
}

bool BatchScheduler::Ready(const Plan& plan, absl::Time now) const {
  const bool full = plan.full || static_cast<int64_t>(plan.docs.size()) >= options_.max_batch_size ||
                    plan.tokens >= plan.cap;
  return full || draining_ || now >= StateOf(plan.head.ticket).enqueued + options_.max_queue_delay;
}

std::unique_ptr<Batch> BatchScheduler::Commit(const Plan& plan, absl::Time now) {
  MemoryReservation reserved;
  if (memory_.budget != nullptr) {
    std::optional<MemoryReservation> r =
        memory_.budget->TryReserve(SatAdd(plan.working, plan.outputs), MemoryKind::kWorking);
    if (!r) return nullptr;  // another holder took memory since planning: look again when it is released
    reserved = std::move(*r);
  }
  auto batch = std::make_unique<Batch>();
  batch->id = next_batch_id_++;
  batch->batch_key = plan.head.key;
  batch->tokens = plan.tokens;
  batch->estimated_bytes = plan.working;
  batch->output_bytes = plan.outputs;
  batch->long_batch = options_.long_batch_tokens > 0 && plan.tokens > options_.long_batch_tokens;
  for (TaskState* state : plan.starts) {
    state->outputs_reserved = true;
    state->task->output_memory = reserved.Split(state->need.outputs, MemoryKind::kOutput);
    started_outputs_ = SatAdd(started_outputs_, state->need.outputs);
  }
  for (const DocEntry& doc : plan.docs) {
    TaskState* state = &StateOf(doc.ticket);
    TakeDocument(state, doc);
    ++state->running_docs;
    if (state->started == absl::InfiniteFuture()) state->started = now;
    batch->items.push_back(BatchItem{state->task.get(), doc.document, doc.tokens, doc.ticket});
  }
  for (TaskState* state : plan.starts) {
    if (state->queued_docs == 0 || state->started_listed) continue;
    started_queued_.insert(state->ticket);
    started_working_.insert(state->need.longest_working);
    state->started_listed = true;
    ops_ += 2;
  }
  ++running_batches_;
  if (batch->long_batch) ++running_long_batches_;
  running_.emplace(batch->id, std::move(reserved));
  ++ops_;
  return batch;
}

BatchScheduler::Plan BatchScheduler::NewPlan(bool reserve, bool started_only) {
  Plan plan;
  plan.id = next_plan_++;
  plan.cap = reserve ? std::min(options_.long_batch_tokens, options_.max_batch_tokens) : options_.max_batch_tokens;
  plan.started_only = started_only;
  if (memory_.budget != nullptr) plan.free = memory_.budget->free_bytes();
  return plan;
}

std::unique_ptr<Batch> BatchScheduler::FormBatch(absl::Time now, std::vector<Finished>* out) {
  const bool reserve = options_.num_workers >= 2 && options_.long_batch_tokens > 0 &&
                       running_long_batches_ >= options_.num_workers - 1;
  const bool short_only = reserve && ShortTokens(options_) > 0;
  std::optional<DocEntry> head = PickHead(now, short_only, out);
  if (!head) return nullptr;
  Plan plan = NewPlan(reserve, /*started_only=*/false);
  bool fits = PlanBatch(*head, &plan);
  std::vector<uint64_t> cancelled = std::move(plan.cancelled);
  if (!fits && !reserve) {
    // The head does not fit the free memory: documents of requests already started go first, so
    // that their outputs (which hold memory) can be answered. With a reservation active, running
    // long batches will free memory instead.
    std::optional<DocEntry> fallback = FallbackHead();
    if (fallback && fallback->ticket != head->ticket) {
      plan = NewPlan(reserve, /*started_only=*/true);
      fits = PlanBatch(*fallback, &plan);
      cancelled.insert(cancelled.end(), plan.cancelled.begin(), plan.cancelled.end());
    }
  }
  std::unique_ptr<Batch> batch = fits && Ready(plan, now) ? Commit(plan, now) : nullptr;
  // After Commit: a request cancelled while its other documents joined the batch keeps those.
  for (uint64_t ticket : cancelled) Stop(ticket, absl::CancelledError("the request was cancelled"), now, out);
  return batch;
}

std::unique_ptr<Batch> BatchScheduler::NextBatch() {
  std::vector<Finished> finished;
  std::unique_ptr<Batch> batch;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    SweepLocked(now, &finished);
    if (!aborted_.load()) batch = FormBatch(now, &finished);
  }
  Deliver(&finished);
  return batch;
}

void BatchScheduler::Complete(const Batch& batch, absl::Span<const absl::Status> results, size_t keep_bytes,
                              MemoryReservation* kept) {
  std::vector<Finished> finished;
  MemoryReservation working;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    --running_batches_;
    if (batch.long_batch) --running_long_batches_;
    if (auto it = running_.find(batch.id); it != running_.end()) {
      working = std::move(it->second);
      running_.erase(it);
    }
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
  if (kept != nullptr) *kept = working.Split(keep_bytes, MemoryKind::kWorking);
  working.Release();  // without the lock: budget listeners may call back into the scheduler
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
  // The first entry of `index` whose time + shift is still ahead.
  auto first_after = [&](const TimeIndex& index, absl::Duration shift) {
    if (shift == absl::InfiniteDuration()) return;
    auto it = index.upper_bound({now - shift, UINT64_MAX});
    if (it != index.end()) wake = std::min(wake, it->first + shift);
  };
  first_after(enqueued_, options_.max_queue_delay);
  first_after(enqueued_, options_.priority_aging);
  first_after(deadlines_, absl::ZeroDuration());
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
      absl::Status stop = TaskStopStatus(*StateOf(ticket).task, now);
      Stop(ticket, stop.ok() ? abort_status_ : stop, now, &finished);
    }
  }
  Deliver(&finished);
}

void BatchScheduler::Deliver(std::vector<Finished>* finished) {
  for (Finished& f : *finished) {
    if (!f.status.ok()) f.task->output_memory.Release();  // no response will hold the outputs
    finish_(std::move(f.task), std::move(f.status), f.timing);
  }
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
uint64_t BatchScheduler::index_operations() const {
  absl::MutexLock lock(&mu_);
  return ops_;
}

}  // namespace reformer::serving
