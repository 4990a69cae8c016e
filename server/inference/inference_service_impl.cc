// The InferenceService on top of BatchScheduler: worker threads (each owning one DocumentRunner), a
// sweeper thread that answers cancelled/expired queued requests while every worker is busy, and the
// drain/shutdown sequence.
//
// Partial cancellation: a running batch stops (within one layer) only when ALL its requests are
// cancelled or expired; when only some are, the batch runs on and their outputs are discarded (they
// are answered CANCELLED / DEADLINE_EXCEEDED when the batch completes). Re-running the survivors would
// waste the work already done, and similar-length grouping keeps batch mates' run times alike, so
// the wasted compute is bounded by one batch.
//
// Memory: the scheduler reserves from the process-wide budget; this file listens to it. Every
// release (a batch completing, a response sent by the RPC layer) wakes the workers, since a batch
// that did not fit may fit now, and refreshes the observer's memory gauges. A worker's session keeps
// its last run's working memory between runs (so the next run does not page-fault it in again): the
// worker keeps that much of the batch's reservation at Complete() (reserving any excess over the
// estimate first, or returning the session's memory to the OS when that does not fit), and drops it
// when the session releases the memory or its next batch (with its own reservation) starts. So the
// budget covers idle workers' memory too.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/batching/batch_scheduler.h"
#include "server/batching/clock.h"
#include "server/inference/document_runner.h"
#include "server/inference/inference_service.h"
#include "server/request/exception_status.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

// How often idle workers and the sweeper re-check cancellation flags (these are not signalled).
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);
// A worker that has found no work for this long returns the working memory its session keeps
// between runs (engine Session::ReleaseWorkspace); under load it keeps and reuses it.
constexpr absl::Duration kReleaseIdleMemoryAfter = absl::Seconds(2);

struct Task : BatchTask {  // output_memory (BatchTask) moves to InferenceResult on OK
  std::unique_ptr<InferenceRequest> request;  // its response buffers receive the outputs
  DoneCallback done;
};

class InferenceServiceImpl final : public InferenceService, private MemoryBudget::Listener {
 public:
  InferenceServiceImpl(std::shared_ptr<const ReformerModel> model, const ModelLimits& limits,
                       const InferenceOptions& options, const Clock* clock, InferenceObserver* observer)
      : model_(std::move(model)),
        limits_(limits),
        options_(options),
        request_limits_{limits.context, limits.vocab_size,
                        ToSchedulerOptions(options, limits).max_tokens_per_request, options.max_response_bytes},
        clock_(clock),
        observer_(observer) {}

  ~InferenceServiceImpl() override { Shutdown(); }

  absl::Status Start(RunnerFactory factory, ServiceMemory memory) {
    if (absl::Status s = StartScheduler(std::move(memory)); !s.ok()) return s;
    factory_ = std::move(factory);
    for (int w = 0; w < options_.workers; ++w) {
      workers_.emplace_back([this, w] { WorkerLoop(w); });
    }
    sweeper_ = std::thread([this] { SweeperLoop(); });
    absl::Status startup;
    {
      absl::MutexLock lock(&wake_mu_);
      auto all_started = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) {
        return started_workers_ == options_.workers;
      };
      wake_mu_.Await(absl::Condition(&all_started));
      startup = startup_status_;
    }
    if (!startup.ok()) Shutdown();
    return startup;
  }

  absl::Status Submit(std::unique_ptr<InferenceRequest> request, DoneCallback done) override {
    if (request == nullptr) return absl::InvalidArgumentError("Submit: null request");
    if (!done) return absl::InvalidArgumentError("Submit: null done callback");
    // The one validation of the request (server/request/validate.h), next to the scheduler's admission.
    if (absl::Status s = Validate(*request, request_limits_); !s.ok()) {
      if (observer_) observer_->OnRejected(absl::IsResourceExhausted(s) ? "too_large" : "invalid");
      return s;
    }
    auto task = std::make_unique<Task>();
    const Documents& docs = request->documents;
    task->lengths.reserve(static_cast<size_t>(docs.size()));
    for (int64_t d = 0; d < docs.size(); ++d) task->lengths.push_back(docs.length(d));
    task->batch_key = request->engine_outputs();  // 0: no engine forward (token_ids/lengths only)
    task->response_bytes = static_cast<size_t>(request->ResponseBytes());  // padding included
    task->priority = request->priority;
    task->deadline = request->deadline;
    task->cancelled = request->cancelled;
    task->request = std::move(request);
    task->done = std::move(done);
    std::unique_ptr<BatchTask> base = std::move(task);
    std::string reason;
    {
      // Count before scheduling: the task may finish on a worker before Schedule returns.
      absl::MutexLock lock(&inflight_mu_);
      ++inflight_;
    }
    absl::Status status = scheduler_->Schedule(&base, &reason);
    if (!status.ok()) {
      ChangeInflight(-1, /*report=*/false);
      if (observer_) observer_->OnRejected(reason);
      return status;
    }
    ChangeInflight(0, /*report=*/true);
    ReportQueue();
    Notify();
    return absl::OkStatus();
  }

  void StartDraining() override {
    scheduler_->StartDraining();
    Notify();
  }

  bool WaitIdle(absl::Duration timeout) override {
    absl::MutexLock lock(&wake_mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) {
      absl::MutexLock inflight_lock(&inflight_mu_);
      return inflight_ == 0 && scheduler_->Idle();
    };
    return wake_mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  }

  void Shutdown() override {
    {
      absl::MutexLock lock(&wake_mu_);
      if (shut_down_) return;
      shut_down_ = true;
    }
    if (scheduler_ != nullptr) {
      scheduler_->Abort(absl::UnavailableError("the server is shutting down; retry on another replica"));
    }
    {
      absl::MutexLock lock(&wake_mu_);
      stop_ = true;
    }
    for (std::thread& t : workers_) t.join();
    workers_.clear();
    if (sweeper_.joinable()) sweeper_.join();
    // Reservations may outlive the service (responses still being sent): stop listening first.
    if (budget_ != nullptr) budget_->RemoveListener(this);
    ReportQueue();
  }

  std::shared_ptr<MemoryBudget> memory_budget() const override { return budget_; }
  const ReformerModel& model() const override { return *model_; }
  const InferenceOptions& options() const override { return options_; }
  int64_t queued_requests() const override { return scheduler_->queued_requests(); }
  int64_t queued_tokens() const override { return scheduler_->queued_tokens(); }

 private:
  absl::Status StartScheduler(ServiceMemory memory) {
    budget_ = std::move(memory.budget);
    if (budget_ == nullptr) {
      absl::StatusOr<std::shared_ptr<MemoryBudget>> budget = MemoryBudget::Create(options_.memory_budget_bytes);
      if (!budget.ok()) return budget.status();
      budget_ = *std::move(budget);
    }
    auto scheduler = BatchScheduler::Create(
        ToSchedulerOptions(options_, limits_), {budget_, std::move(memory.working), std::move(memory.output)},
        clock_, [this](std::unique_ptr<BatchTask> task, absl::Status status, const TaskTiming& timing) {
          OnFinish(std::move(task), std::move(status), timing);
        });
    if (!scheduler.ok()) return scheduler.status();
    scheduler_ = std::move(scheduler).value();
    budget_->AddListener(this);
    if (observer_) observer_->OnMemoryBudget(budget_->total_bytes());
    ReportMemory();
    return absl::OkStatus();
  }

  // MemoryBudget::Listener: runs on the releasing thread (a worker, or the RPC layer sending a response).
  void OnMemoryReleased() override {
    ReportMemory();
    Notify();
  }

  // Serialized, and reading the budget inside the lock, so the last report holds the latest numbers.
  void ReportMemory() {
    if (observer_ == nullptr || budget_ == nullptr) return;
    absl::MutexLock lock(&report_mu_);
    for (MemoryKind kind : {MemoryKind::kWorking, MemoryKind::kOutput, MemoryKind::kCache}) {
      observer_->OnMemoryReserved(MemoryKindName(kind), budget_->reserved_bytes(kind));
    }
  }

  void Notify() {
    absl::MutexLock lock(&wake_mu_);
    ++wake_seq_;
  }

  void ChangeInflight(int64_t delta, bool report) {
    absl::MutexLock lock(&inflight_mu_);
    inflight_ += delta;
    if (report && observer_) observer_->OnInflightChanged(inflight_);
  }

  void ReportQueue() {
    if (observer_ && scheduler_) observer_->OnQueueChanged(scheduler_->queued_requests(), scheduler_->queued_tokens());
  }

  // Waits (real time, at most kPollInterval) until something changes or the next scheduled wake-up.
  void WaitForWork(uint64_t seen) {
    absl::Duration wait = kPollInterval;
    const absl::Time wake = scheduler_->NextWakeup();
    if (wake != absl::InfiniteFuture()) {
      wait = std::min(wait, std::max(absl::ZeroDuration(), wake - clock_->Now()));
    }
    absl::MutexLock lock(&wake_mu_);
    auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) { return stop_ || wake_seq_ != seen; };
    wake_mu_.AwaitWithTimeout(absl::Condition(&changed), wait);
  }

  void WorkerLoop(int worker) {
    absl::StatusOr<std::unique_ptr<DocumentRunner>> runner = factory_(worker);
    {
      absl::MutexLock lock(&wake_mu_);
      if (!runner.ok() && startup_status_.ok()) {
        startup_status_ = absl::Status(runner.status().code(),
                                       absl::StrFormat("worker %d: %s", worker, runner.status().message()));
      }
      ++started_workers_;
    }
    if (!runner.ok()) return;
    bool holds_memory = false;  // ran a batch since it last released its session's memory
    MemoryReservation retained;  // the budget's hold on what the session keeps between runs
    absl::Time idle_since = absl::InfiniteFuture();
    while (true) {
      uint64_t seen;
      {
        absl::MutexLock lock(&wake_mu_);
        if (stop_) break;
        seen = wake_seq_;
      }
      std::unique_ptr<Batch> batch = scheduler_->NextBatch();
      if (batch == nullptr) {
        const absl::Time now = clock_->Now();
        if (idle_since == absl::InfiniteFuture()) idle_since = now;
        if (holds_memory && now - idle_since >= kReleaseIdleMemoryAfter) {
          (*runner)->ReleaseIdleMemory();
          holds_memory = false;
          retained.Release();
        }
        WaitForWork(seen);
        continue;
      }
      holds_memory = true;
      idle_since = absl::InfiniteFuture();
      ReportMemory();  // the batch reserved its working memory and the outputs it starts
      retained.Release();  // the run first trims what the session kept to its own (reserved) plan
      RunBatch(worker, **runner, *batch, &retained);
    }
    // Destroy the runner (engine Session) on the thread that created it.
    runner = absl::CancelledError("worker stopped");
  }

  // Completes `batch`, moving into `*retained` the budget's hold on what the session keeps.
  void CompleteKeepingSessionMemory(DocumentRunner& runner, const Batch& batch,
                                    absl::Span<const absl::Status> statuses, MemoryReservation* retained) {
    size_t keep = runner.retained_bytes();
    std::optional<MemoryReservation> extra;  // beyond the batch's estimate
    if (keep > batch.estimated_bytes) extra = budget_->TryReserve(keep - batch.estimated_bytes, MemoryKind::kWorking);
    if (keep > batch.estimated_bytes && !extra) {
      runner.ReleaseIdleMemory();
      keep = 0;
    }
    scheduler_->Complete(batch, statuses, keep, retained);
    if (extra) retained->Merge(std::move(*extra));
  }

  void RunBatch(int worker, DocumentRunner& runner, const Batch& batch, MemoryReservation* retained) {
    ReportQueue();
    bool counted = false;  // a batch of internal requests only (the warm-up) is not reported
    for (const BatchItem& item : batch.items) {
      counted |= !static_cast<const Task&>(*item.task).request->internal;
    }
    if (observer_ && counted) observer_->OnBatch(static_cast<int64_t>(batch.items.size()), batch.tokens);
    std::vector<absl::Status> statuses(batch.items.size());
    const absl::Time start = clock_->Now();
    try {
      RunItems(worker, runner, batch, &statuses);
    } catch (...) {
      const absl::Status status = CurrentExceptionStatus("running a batch");
      for (absl::Status& st : statuses) st = status;
    }
    if (observer_ && counted) {
      observer_->OnBatchComputed(static_cast<int64_t>(batch.items.size()),
                                 absl::ToDoubleSeconds(clock_->Now() - start));
    }
    CompleteKeepingSessionMemory(runner, batch, statuses, retained);
    ReportQueue();
    Notify();
  }

  // Allocates the items' response buffers (once per request), runs the documents whose buffers
  // exist and records each item's outcome in `statuses`.
  void RunItems(int worker, DocumentRunner& runner, const Batch& batch, std::vector<absl::Status>* statuses) {
    std::vector<size_t> run;  // indices of items with response buffers
    std::vector<absl::Span<const int32_t>> docs;
    std::vector<OutputView> views;  // the engine writes each document's outputs straight into its response
    for (size_t i = 0; i < batch.items.size(); ++i) {
      const BatchItem& item = batch.items[i];
      InferenceRequest& request = *static_cast<Task&>(*item.task).request;
      (*statuses)[i] = request.AllocateOutputs();
      if (!(*statuses)[i].ok()) continue;
      run.push_back(i);
      docs.push_back(request.documents[item.document]);
      views.push_back(request.View(item.document));
    }
    if (run.empty() || batch.batch_key == 0) return;  // nothing for the engine to compute
    runner.reset_workspace_high_water();
    const CancelFn cancel = [this, &batch] { return scheduler_->ShouldStop(batch); };
    const absl::Status status =
        runner.Run(absl::MakeConstSpan(docs), batch.batch_key, absl::MakeConstSpan(views), cancel);
    if (observer_) observer_->OnWorkspaceBytes(worker, runner.workspace_high_water_bytes());
    if (status.ok()) return;
    for (size_t i : run) {
      (*statuses)[i] = absl::IsCancelled(status) ? scheduler_->StopStatus(batch.items[i]) : status;
    }
  }

  void SweeperLoop() {
    while (true) {
      {
        absl::MutexLock lock(&wake_mu_);
        auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) { return stop_; };
        if (wake_mu_.AwaitWithTimeout(absl::Condition(&stopped), kPollInterval)) break;
      }
      if (scheduler_->Sweep() > 0) {
        ReportQueue();
        Notify();
      }
    }
  }

  void OnFinish(std::unique_ptr<BatchTask> base, absl::Status status, const TaskTiming& timing) {
    Task& task = static_cast<Task&>(*base);
    InferenceResult result;
    result.status = std::move(status);
    if (result.status.ok()) result.output_memory = std::move(task.output_memory);  // held until sent
    result.tokens = timing.tokens;
    result.queue_seconds = timing.queue_seconds;
    result.compute_seconds = timing.compute_seconds;
    if (observer_ && !task.request->internal) {
      observer_->OnRequestDone(task.request->method, result.status, result.tokens, result.queue_seconds,
                               result.compute_seconds);
    }
    DoneCallback done = std::move(task.done);
    result.request = std::move(task.request);
    base.reset();
    try {
      done(std::move(result));
    } catch (...) {
      // Adapters answer their RPC inside `done` and catch their own errors; nothing may leave a
      // worker, so a stray exception is only logged.
      const absl::Status status = CurrentExceptionStatus("answering a request");
      std::fprintf(stderr, "InferenceService: %s\n", std::string(status.message()).c_str());
    }
    ChangeInflight(-1, /*report=*/true);  // after `done`: WaitIdle() returns only once answers are out
    Notify();
  }

  const std::shared_ptr<const ReformerModel> model_;
  const ModelLimits limits_;
  const InferenceOptions options_;
  const RequestLimits request_limits_;
  const Clock* const clock_;
  InferenceObserver* const observer_;
  RunnerFactory factory_;
  std::shared_ptr<MemoryBudget> budget_;  // process-wide; shared with the scheduler and reservations
  std::unique_ptr<BatchScheduler> scheduler_;
  absl::Mutex report_mu_;  // serializes ReportMemory

  absl::Mutex wake_mu_;
  uint64_t wake_seq_ ABSL_GUARDED_BY(wake_mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(wake_mu_) = false;
  int started_workers_ ABSL_GUARDED_BY(wake_mu_) = 0;
  absl::Status startup_status_ ABSL_GUARDED_BY(wake_mu_);

  absl::Mutex inflight_mu_;
  int64_t inflight_ ABSL_GUARDED_BY(inflight_mu_) = 0;

  std::vector<std::thread> workers_;  // joined in Shutdown(), before scheduler_ is destroyed
  std::thread sweeper_;
};

}  // namespace

absl::Status InferenceOptions::Validate() const {
  auto positive = [](const char* flag, int64_t value) {
    return value >= 1 ? absl::OkStatus()
                      : absl::InvalidArgumentError(absl::StrFormat("--%s must be >= 1, got %d", flag, value));
  };
  for (absl::Status s : {positive("workers", workers), positive("threads_per_worker", threads_per_worker),
                         positive("max_batch_tokens", max_batch_tokens), positive("max_batch_size", max_batch_size),
                         positive("memory_budget_bytes", memory_budget_bytes),
                         positive("workspace_budget_bytes", workspace_budget_bytes),
                         positive("max_queue_requests", max_queue_requests),
                         positive("max_queue_tokens", max_queue_tokens),
                         positive("max_response_bytes", max_response_bytes)}) {
    if (!s.ok()) return s;
  }
  if (max_tokens_per_request < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--max_tokens_per_request must be >= 0 (0 = 8 x the model's context), got %d", max_tokens_per_request));
  }
  if (long_batch_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--long_batch_tokens must be >= 0 (0 = no reservation), got %d", long_batch_tokens));
  }
  if (batch_fill_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--batch_fill_tokens must be >= 0 (0 = --max_batch_tokens), got %d", batch_fill_tokens));
  }
  if (!(length_ratio >= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("--batch_length_ratio must be >= 1, got %g", length_ratio));
  }
  if (max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_queue_delay_ms must be >= 0, got ", absl::FormatDuration(max_queue_delay)));
  }
  if (priority_aging < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the priority aging time must be >= 0, got ", absl::FormatDuration(priority_aging)));
  }
  ModelLimits any{1, 1, 1};
  return ToSchedulerOptions(*this, any).Validate();
}

SchedulerOptions ToSchedulerOptions(const InferenceOptions& options, const ModelLimits& limits) {
  SchedulerOptions s;
  s.max_batch_tokens = options.max_batch_tokens;
  s.max_batch_size = options.max_batch_size;
  s.max_queue_delay = options.max_queue_delay;
  s.max_queue_requests = options.max_queue_requests;
  s.max_queue_tokens = options.max_queue_tokens;
  s.max_tokens_per_request =
      options.max_tokens_per_request > 0 ? options.max_tokens_per_request : 8 * limits.context;
  s.max_document_tokens = limits.context;
  s.num_workers = options.workers;
  s.long_batch_tokens = options.long_batch_tokens;
  s.batch_fill_tokens = options.batch_fill_tokens;
  s.length_ratio = options.length_ratio;
  s.priority_aging = options.priority_aging;
  return s;
}

absl::StatusOr<std::unique_ptr<InferenceService>> CreateInferenceServiceWithRunners(
    std::shared_ptr<const ReformerModel> model, const ModelLimits& limits, const InferenceOptions& options,
    const Clock* clock, InferenceObserver* observer, RunnerFactory factory, ServiceMemory memory) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("InferenceService needs a clock");
  if (!factory) return absl::InvalidArgumentError("InferenceService needs a runner factory");
  if (limits.context < 1 || limits.vocab_size < 1 || limits.hidden_width < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("bad model limits: context %d, vocab %d, hidden width %d",
                                                      limits.context, limits.vocab_size, limits.hidden_width));
  }
  auto service = std::make_unique<InferenceServiceImpl>(std::move(model), limits, options, clock, observer);
  if (absl::Status s = service->Start(std::move(factory), std::move(memory)); !s.ok()) return s;
  return std::unique_ptr<InferenceService>(std::move(service));
}

}  // namespace reformer::serving
