// The InferenceService on top of BatchScheduler: worker threads (each owning one DocumentRunner), a
// sweeper thread that answers cancelled/expired queued requests while every worker is busy, and the
// drain/shutdown sequence.
//
// Partial cancellation: a running batch stops (within one layer) only when ALL its requests are
// cancelled or expired; when only some are, the batch runs on and their outputs are discarded (they
// are answered CANCELLED / DEADLINE_EXCEEDED when the batch completes). Re-running the survivors would
// waste the work already done, and similar-length grouping keeps batch mates' run times alike, so
// the wasted compute is bounded by one batch.
#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/batching/batch_scheduler.h"
#include "server/batching/clock.h"
#include "server/inference/document_runner.h"
#include "server/inference/inference_service.h"

namespace reformer::serving {
namespace {

// How often idle workers and the sweeper re-check cancellation flags (these are not signalled).
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);
// A worker that has found no work for this long returns the working memory its session keeps
// between runs (engine Session::ReleaseWorkspace); under load it keeps and reuses it.
constexpr absl::Duration kReleaseIdleMemoryAfter = absl::Seconds(2);

struct Task : BatchTask {
  std::unique_ptr<InferenceRequest> request;
  DoneCallback done;
  std::vector<DocumentOutput> outputs;  // one per document; each written by the worker that ran it
};

class InferenceServiceImpl final : public InferenceService {
 public:
  InferenceServiceImpl(std::shared_ptr<const ReformerModel> model, const ModelLimits& limits,
                       const InferenceOptions& options, const Clock* clock, InferenceObserver* observer)
      : model_(std::move(model)), limits_(limits), options_(options), clock_(clock), observer_(observer) {}

  ~InferenceServiceImpl() override { Shutdown(); }

  absl::Status Start(RunnerFactory factory, BatchScheduler::MemoryEstimateFn estimate) {
    auto scheduler = BatchScheduler::Create(
        ToSchedulerOptions(options_, limits_), std::move(estimate), clock_,
        [this](std::unique_ptr<BatchTask> task, absl::Status status, const TaskTiming& timing) {
          OnFinish(std::move(task), std::move(status), timing);
        });
    if (!scheduler.ok()) return scheduler.status();
    scheduler_ = std::move(scheduler).value();
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
    if (absl::Status s = ValidateTokens(*request); !s.ok()) {
      if (observer_) observer_->OnRejected("invalid");
      return s;
    }
    auto task = std::make_unique<Task>();
    task->lengths.reserve(request->documents.size());
    for (const auto& doc : request->documents) task->lengths.push_back(static_cast<int64_t>(doc.size()));
    task->batch_key = request->outputs == 0 ? static_cast<uint32_t>(kOutputAll) : request->outputs;
    task->priority = request->priority;
    task->deadline = request->deadline;
    task->cancelled = request->cancelled;
    task->outputs.resize(request->documents.size());
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
    ReportQueue();
  }

  const ReformerModel& model() const override { return *model_; }
  const InferenceOptions& options() const override { return options_; }
  int64_t queued_requests() const override { return scheduler_->queued_requests(); }
  int64_t queued_tokens() const override { return scheduler_->queued_tokens(); }

 private:
  absl::Status ValidateTokens(const InferenceRequest& request) const {
    for (size_t d = 0; d < request.documents.size(); ++d) {
      const auto& doc = request.documents[d];
      for (size_t t = 0; t < doc.size(); ++t) {
        if (doc[t] < 0 || doc[t] >= limits_.vocab_size) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "document %d, position %d: token id %d is outside [0, %d)", d, t, doc[t], limits_.vocab_size));
        }
      }
    }
    return absl::OkStatus();
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
        }
        WaitForWork(seen);
        continue;
      }
      holds_memory = true;
      idle_since = absl::InfiniteFuture();
      RunBatch(worker, **runner, *batch);
    }
    // Destroy the runner (engine Session) on the thread that created it.
    runner = absl::CancelledError("worker stopped");
  }

  void RunBatch(int worker, DocumentRunner& runner, const Batch& batch) {
    ReportQueue();
    bool counted = false;  // a batch of internal requests only (the warm-up) is not reported
    for (const BatchItem& item : batch.items) {
      counted |= !static_cast<const Task&>(*item.task).request->internal;
    }
    if (observer_ && counted) observer_->OnBatch(static_cast<int64_t>(batch.items.size()), batch.tokens);
    std::vector<absl::Span<const int32_t>> docs;
    docs.reserve(batch.items.size());
    for (const BatchItem& item : batch.items) {
      const Task& task = static_cast<const Task&>(*item.task);
      docs.push_back(absl::MakeConstSpan(task.request->documents[item.document]));
    }
    // Each document's outputs are written straight into its task's DocumentOutput.
    std::vector<OutputView> views;
    views.reserve(batch.items.size());
    for (const BatchItem& item : batch.items) {
      Task& task = static_cast<Task&>(*item.task);
      views.push_back(AllocateOutput(task.request->documents[item.document].size(), batch.batch_key,
                                     &task.outputs[item.document]));
    }
    runner.reset_workspace_high_water();
    const CancelFn cancel = [this, &batch] { return scheduler_->ShouldStop(batch); };
    absl::Status status = runner.Run(absl::MakeConstSpan(docs), batch.batch_key, absl::MakeConstSpan(views), cancel);
    if (observer_) observer_->OnWorkspaceBytes(worker, runner.workspace_high_water_bytes());
    std::vector<absl::Status> statuses(batch.items.size());
    for (size_t i = 0; i < batch.items.size(); ++i) {
      const BatchItem& item = batch.items[i];
      if (status.ok()) {
        // written in place
      } else if (absl::IsCancelled(status)) {
        statuses[i] = scheduler_->StopStatus(item);
      } else {
        statuses[i] = status;
      }
    }
    scheduler_->Complete(batch, statuses);
    ReportQueue();
    Notify();
  }

  OutputView AllocateOutput(size_t tokens, uint32_t outputs, DocumentOutput* o) const {
    const int64_t t = static_cast<int64_t>(tokens);
    o->num_tokens = t;
    OutputView v;
    if (outputs & kOutputLogits) v.logits = Resize(&o->logits, t * limits_.vocab_size);
    if (outputs & kOutputHiddenStates) v.hidden_states = Resize(&o->hidden_states, t * limits_.hidden_width);
    if (outputs & kOutputTokenLogprobs) v.token_logprobs = Resize(&o->token_logprobs, t);
    if (outputs & kOutputEmbedding) v.embedding = Resize(&o->embedding, limits_.hidden_width);
    return v;
  }
  static float* Resize(std::vector<float>* v, int64_t n) {
    v->resize(static_cast<size_t>(n));
    return v->data();
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
    if (result.status.ok()) result.outputs = std::move(task.outputs);
    result.tokens = timing.tokens;
    result.queue_seconds = timing.queue_seconds;
    result.compute_seconds = timing.compute_seconds;
    if (observer_ && !task.request->internal) {
      observer_->OnRequestDone(task.request->method, result.status, result.tokens, result.queue_seconds,
                               result.compute_seconds);
    }
    DoneCallback done = std::move(task.done);
    base.reset();
    done(std::move(result));
    ChangeInflight(-1, /*report=*/true);  // after `done`: WaitIdle() returns only once answers are out
    Notify();
  }

  const std::shared_ptr<const ReformerModel> model_;
  const ModelLimits limits_;
  const InferenceOptions options_;
  const Clock* const clock_;
  InferenceObserver* const observer_;
  RunnerFactory factory_;
  std::unique_ptr<BatchScheduler> scheduler_;

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
  if (workers < 1) return absl::InvalidArgumentError(absl::StrFormat("workers must be >= 1, got %d", workers));
  if (threads_per_worker < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("threads_per_worker must be >= 1, got %d", threads_per_worker));
  }
  if (max_tokens_per_request < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens_per_request must be >= 0 (0 = 8 x context), got %d", max_tokens_per_request));
  }
  if (workspace_budget_bytes == 0) return absl::InvalidArgumentError("workspace_budget_bytes must be > 0");
  ModelLimits any{1, 1, 1};
  return ToSchedulerOptions(*this, any).Validate();
}

SchedulerOptions ToSchedulerOptions(const InferenceOptions& options, const ModelLimits& limits) {
  SchedulerOptions s;
  s.max_batch_tokens = options.max_batch_tokens;
  s.max_batch_size = options.max_batch_size;
  s.memory_budget_bytes = options.memory_budget_bytes;
  s.max_queue_delay = options.max_queue_delay;
  s.max_queue_requests = options.max_queue_requests;
  s.max_queue_tokens = options.max_queue_tokens;
  s.max_tokens_per_request =
      options.max_tokens_per_request > 0 ? options.max_tokens_per_request : 8 * limits.context;
  s.max_document_tokens = limits.context;
  s.num_workers = options.workers;
  s.long_batch_tokens = options.long_batch_tokens;
  s.length_ratio = options.length_ratio;
  return s;
}

absl::StatusOr<std::unique_ptr<InferenceService>> CreateInferenceServiceWithRunners(
    std::shared_ptr<const ReformerModel> model, const ModelLimits& limits, const InferenceOptions& options,
    const Clock* clock, InferenceObserver* observer, RunnerFactory factory,
    BatchScheduler::MemoryEstimateFn estimate) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("InferenceService needs a clock");
  if (!factory) return absl::InvalidArgumentError("InferenceService needs a runner factory");
  if (limits.context < 1 || limits.vocab_size < 1 || limits.hidden_width < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("bad model limits: context %d, vocab %d, hidden width %d",
                                                      limits.context, limits.vocab_size, limits.hidden_width));
  }
  auto service = std::make_unique<InferenceServiceImpl>(std::move(model), limits, options, clock, observer);
  if (absl::Status s = service->Start(std::move(factory), std::move(estimate)); !s.ok()) return s;
  return std::unique_ptr<InferenceService>(std::move(service));
}

}  // namespace reformer::serving
