// GenerationService on engine Decoders: the worker loop of generation_service.h.
//
// Memory accounting (all against the process-wide budget):
//  - per sequence (SequenceQueue): its DecodeState (DecodeState::EstimateBytes, exact, kind cache);
//    its prompt pass's forward (EstimatePeakWorkingBytes for the model's compute type, plus the LSH
//    bucket keys the pass hands back), released when the pass ends; for recompute mode the forward
//    of its longest step, held for its life;
//  - per worker: the step buffers of max_active sequences (Decoder::EstimateStepBytes), held for
//    the worker's life (the Decoder keeps them), and what the Decoder keeps of its last forward's
//    working memory for the next one (reserved while kept; returned to the OS, and the reservation
//    released, when the reservation is refused or after 2 s without work, as the forward workers do).
#include "server/inference/generation_service.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "engine/model/decoder.h"
#include "engine/model/engine_api.h"
#include "server/batching/sequence_queue.h"
#include "server/request/exception_status.h"

namespace reformer::serving {
namespace {

// How often an idle worker re-checks cancellation flags, deadlines and paused sinks (not signalled).
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);
// A worker without sequences for this long returns the memory its Decoder keeps between forwards.
constexpr absl::Duration kReleaseIdleMemoryAfter = absl::Seconds(2);

struct GenTask : SequenceTask {
  std::unique_ptr<GenerateRequest> request;
  GenerationParams params;  // the request's, seed resolved
  GenerationSink* sink = nullptr;
  absl::Time received;
};

// A started sequence, owned by one worker.
struct Live {
  std::unique_ptr<GenTask> task;
  std::unique_ptr<DecodeState> state;
  std::unique_ptr<GenerationSequence> seq;
  std::vector<float> logits;
  int32_t next = 0;  // the token the next step feeds
  int64_t generated = 0;
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();
  absl::Time paused_since = absl::InfiniteFuture();
};

// Bytes of the LSH sort keys a prompt pass of `padded` positions hands back (heap, beside the
// forward's workspace).
size_t BucketBytes(const ReformerConfig& c, int64_t padded) {
  int64_t lsh = 0;
  for (AttnType t : c.attn_layers) lsh += t == AttnType::kLsh;
  return static_cast<size_t>(lsh * c.num_attention_heads * c.num_hashes * padded) * sizeof(int32_t);
}

// A worker's step buffers (max_active sequences), reserved for its life.
size_t StepBytes(const ReformerConfig& c, const GenerationOptions& o) {
  return Decoder::EstimateStepBytes(c, o.max_active, o.threads_per_worker);
}

class GenerationServiceImpl;

// One worker thread's state: its Decoder and sequences (thread-confined).
class Worker {
 public:
  Worker(GenerationServiceImpl* service, int index) : service_(service), index_(index) {}
  void Run();

 private:
  absl::Status Init();
  void Loop();
  void StartNew();
  void Prefill();
  // One step of the running sequences that are not paused; false when none could step.
  bool StepActive();
  void AcceptAndEmit(std::unique_ptr<Live> live, absl::Time now);
  absl::Status StopStatus(Live& live, absl::Time now) const;
  void KeepRetained(MemoryReservation freed);
  void FailAll(const absl::Status& status);
  void Finish(std::unique_ptr<Live> live, GenerationEvent last);

  GenerationServiceImpl* const service_;
  const int index_;
  std::unique_ptr<Decoder> decoder_;
  MemoryReservation step_memory_;  // the step buffers, for the worker's life
  MemoryReservation retained_;     // what the Decoder keeps of its last forward
  std::vector<std::unique_ptr<Live>> pending_;  // started, prompt pass not yet run
  std::vector<std::unique_ptr<Live>> active_;   // running
  bool holds_memory_ = false;
  // The last step of the running sequences: when it ended and how long it took (the pacing of the
  // steps taken inside a prompt pass, Prefill()).
  absl::Time last_step_end_ = absl::InfinitePast();
  absl::Duration last_step_time_ = absl::ZeroDuration();
};

class GenerationServiceImpl final : public GenerationService, private MemoryBudget::Listener {
 public:
  GenerationServiceImpl(std::shared_ptr<const ReformerModel> model, const GenerationOptions& options,
                        std::shared_ptr<MemoryBudget> budget, const Clock* clock,
                        GenerationObserver* observer)
      : model_(std::move(model)),
        options_(options),
        budget_(std::move(budget)),
        clock_(clock),
        observer_(observer) {}
  ~GenerationServiceImpl() override { Shutdown(); }

  absl::Status Start();
  absl::Status Submit(std::unique_ptr<GenerateRequest> request, GenerationSink* sink) override;
  void Wake() override { Notify(); }
  void StartDraining() override {
    queue_->StartDraining();
    Notify();
  }
  bool WaitIdle(absl::Duration timeout) override {
    absl::MutexLock lock(&wake_mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) { return inflight_.load() == 0; };
    return wake_mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  }
  void Shutdown() override;
  const GenerationOptions& options() const override { return options_; }
  int64_t inflight() const override { return inflight_.load(); }

  // --- For the workers.
  const ReformerModel& model() const { return *model_; }
  const std::shared_ptr<const ReformerModel>& model_ptr() const { return model_; }
  const Clock& clock() const { return *clock_; }
  GenerationObserver* observer() const { return observer_; }
  MemoryBudget& budget() const { return *budget_; }
  SequenceQueue& queue() const { return *queue_; }
  bool aborted() const { return aborted_.load(); }
  void Notify() {
    absl::MutexLock lock(&wake_mu_);
    ++wake_seq_;
  }
  // Returns the wake sequence number, or nullopt when the worker must stop.
  std::optional<uint64_t> WakeSeq() {
    absl::MutexLock lock(&wake_mu_);
    if (stop_) return std::nullopt;
    return wake_seq_;
  }
  void WaitForWork(uint64_t seen);
  void WorkerStarted(int index, const absl::Status& status);
  void ChangeActive(int64_t delta) {
    const int64_t n = active_.fetch_add(delta) + delta;
    if (observer_ != nullptr) observer_->OnActiveSequences(n);
  }
  void ReportCache() {
    if (observer_ != nullptr) observer_->OnCacheBytes(budget_->reserved_bytes(MemoryKind::kCache));
  }
  // A stream's last event was delivered.
  void Ended() {
    inflight_.fetch_sub(1);
    Notify();
  }

 private:
  void OnMemoryReleased() override {
    ReportCache();
    Notify();
  }
  void EndWaiting(std::unique_ptr<SequenceTask> base, absl::Status status);
  std::unique_ptr<GenTask> MakeTask(std::unique_ptr<GenerateRequest> request, GenerationSink* sink) const;

  const std::shared_ptr<const ReformerModel> model_;
  const GenerationOptions options_;
  const std::shared_ptr<MemoryBudget> budget_;
  const Clock* const clock_;
  GenerationObserver* const observer_;
  std::unique_ptr<SequenceQueue> queue_;
  std::atomic<int64_t> inflight_{0};
  std::atomic<int64_t> active_{0};
  std::atomic<bool> aborted_{false};

  absl::Mutex wake_mu_;
  uint64_t wake_seq_ ABSL_GUARDED_BY(wake_mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(wake_mu_) = false;
  int started_workers_ ABSL_GUARDED_BY(wake_mu_) = 0;
  absl::Status startup_status_ ABSL_GUARDED_BY(wake_mu_);
  std::vector<std::thread> workers_;
};

// ------------------------------------------------------------------------------------------------
// The service.

absl::Status GenerationServiceImpl::Start() {
  SequenceQueueOptions qo;
  qo.max_waiting = options_.max_waiting;
  qo.priority_aging = options_.priority_aging;
  qo.held_for_life_bytes =
      static_cast<size_t>(options_.workers) * StepBytes(model_->config(), options_);
  auto queue = SequenceQueue::Create(
      qo, budget_, clock_, [this](std::unique_ptr<SequenceTask> task, absl::Status status) {
        EndWaiting(std::move(task), std::move(status));
      });
  if (!queue.ok()) return queue.status();
  queue_ = *std::move(queue);
  budget_->AddListener(this);
  for (int w = 0; w < options_.workers; ++w) {
    workers_.emplace_back([this, w] { Worker(this, w).Run(); });
  }
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
  ReportCache();
  return startup;
}

void GenerationServiceImpl::WorkerStarted(int index, const absl::Status& status) {
  absl::MutexLock lock(&wake_mu_);
  if (!status.ok() && startup_status_.ok()) {
    startup_status_ =
        absl::Status(status.code(), absl::StrFormat("generation worker %d: %s", index, status.message()));
  }
  ++started_workers_;
}

std::unique_ptr<GenTask> GenerationServiceImpl::MakeTask(std::unique_ptr<GenerateRequest> request,
                                                         GenerationSink* sink) const {
  const ReformerConfig& c = model_->config();
  auto task = std::make_unique<GenTask>();
  const int64_t n = static_cast<int64_t>(request->prompt.size()), m = request->max_new_tokens;
  SessionOptions so;
  so.num_threads = options_.threads_per_worker;
  so.workspace_budget_bytes = static_cast<size_t>(options_.workspace_budget_bytes);
  const int64_t one[1] = {n};
  task->prompt_tokens = n;
  task->priority = request->priority;
  task->deadline = request->deadline;
  task->cancelled = request->cancelled;
  task->cache_bytes = DecodeState::EstimateBytes(c, n, m, request->mode);
  task->prefill_bytes = EstimatePeakWorkingBytes(*model_, one, 0, so) + BucketBytes(c, c.PaddedLength(n));
  if (request->mode == DecodeMode::kRecompute) {
    const int64_t longest[1] = {n + m - 1};
    task->working_bytes = EstimatePeakWorkingBytes(*model_, longest, 0, so);
  }
  task->params = request->ToParams();
  if (task->params.sampling.seed == 0) task->params.sampling.seed = PickSeed();
  task->sink = sink;
  task->received = clock_->Now();
  task->request = std::move(request);
  return task;
}

absl::Status GenerationServiceImpl::Submit(std::unique_ptr<GenerateRequest> request,
                                           GenerationSink* sink) {
  if (request == nullptr || sink == nullptr) return absl::InvalidArgumentError("Submit: null argument");
  // The one check of the request (server/request/validate.h), right before admission.
  if (absl::Status s = Validate(*request, model_->config(), options_.limits); !s.ok()) {
    if (observer_ != nullptr) observer_->OnGenerationRejected("invalid");
    return s;
  }
  std::unique_ptr<SequenceTask> task = MakeTask(std::move(request), sink);
  inflight_.fetch_add(1);  // before Admit: the task may end on a worker before Admit returns
  std::string reason;
  absl::Status status = queue_->Admit(&task, &reason);
  if (!status.ok()) {
    inflight_.fetch_sub(1);
    if (observer_ != nullptr) observer_->OnGenerationRejected(reason);
    Notify();
    return status;
  }
  Notify();
  return absl::OkStatus();
}

void GenerationServiceImpl::EndWaiting(std::unique_ptr<SequenceTask> base, absl::Status status) {
  GenerationSink* sink = static_cast<GenTask&>(*base).sink;
  base.reset();
  GenerationEvent last;
  last.status = std::move(status);
  sink->OnEvent(std::move(last));
  Ended();
}

void GenerationServiceImpl::WaitForWork(uint64_t seen) {
  absl::Duration wait = kPollInterval;
  const absl::Time wake = queue_->NextWakeup();
  if (wake != absl::InfiniteFuture()) {
    wait = std::min(wait, std::max(absl::ZeroDuration(), wake - clock_->Now()));
  }
  absl::MutexLock lock(&wake_mu_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) {
    return stop_ || wake_seq_ != seen;
  };
  wake_mu_.AwaitWithTimeout(absl::Condition(&changed), wait);
}

void GenerationServiceImpl::Shutdown() {
  {
    absl::MutexLock lock(&wake_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  aborted_.store(true);
  if (queue_ != nullptr) {
    queue_->Abort(absl::UnavailableError("the server is shutting down; retry on another replica"));
  }
  {
    absl::MutexLock lock(&wake_mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (queue_ != nullptr) budget_->RemoveListener(this);
}

// ------------------------------------------------------------------------------------------------
// A worker.

void Worker::Run() {
  const absl::Status init = Init();
  service_->WorkerStarted(index_, init);
  if (init.ok()) Loop();
  FailAll(absl::UnavailableError("the server is shutting down; the generation was cut short"));
  decoder_.reset();  // on the thread that created it
}

absl::Status Worker::Init() {
  const GenerationOptions& o = service_->options();
  DecoderOptions d;
  d.num_threads = o.threads_per_worker;
  d.workspace_budget_bytes = static_cast<size_t>(o.workspace_budget_bytes);
  absl::StatusOr<std::unique_ptr<Decoder>> decoder = Decoder::Create(service_->model_ptr(), d);
  if (!decoder.ok()) return decoder.status();
  decoder_ = *std::move(decoder);
  const size_t step = StepBytes(service_->model().config(), o);
  std::optional<MemoryReservation> r = service_->budget().TryReserve(step, MemoryKind::kWorking);
  if (!r) {  // the flags can never work: INVALID_ARGUMENT, which reformer-server exits 2 for
    return absl::InvalidArgumentError(absl::StrFormat(
        "the step buffers of %d sequences (%d bytes) do not fit the memory budget (%d bytes free): "
        "raise --memory_budget_bytes or lower --generate_max_active",
        o.max_active, step, service_->budget().free_bytes()));
  }
  step_memory_ = std::move(*r);
  return absl::OkStatus();
}

void Worker::Loop() {
  absl::Time idle_since = absl::InfiniteFuture();
  while (true) {
    const std::optional<uint64_t> seen = service_->WakeSeq();
    if (!seen) return;
    service_->queue().Sweep();
    StartNew();
    if (!pending_.empty()) {
      Prefill();
      idle_since = absl::InfiniteFuture();
      continue;
    }
    if (StepActive()) {
      idle_since = absl::InfiniteFuture();
      continue;
    }
    const absl::Time now = service_->clock().Now();
    if (active_.empty()) {
      if (idle_since == absl::InfiniteFuture()) idle_since = now;
      if (holds_memory_ && now - idle_since >= kReleaseIdleMemoryAfter) {
        decoder_->ReleaseWorkspace();
        retained_.Release();
        holds_memory_ = false;
      }
    }
    service_->WaitForWork(*seen);
  }
}

void Worker::StartNew() {
  const GenerationOptions& o = service_->options();
  const int64_t room = o.max_active - static_cast<int64_t>(active_.size() + pending_.size());
  if (room <= 0 || service_->aborted()) return;
  std::vector<std::unique_ptr<SequenceTask>> started = service_->queue().Start(room, o.max_prefill_tokens);
  if (started.empty() && holds_memory_ && service_->queue().waiting() > 0) {
    // The head does not fit: the workspace this Decoder keeps between forwards goes first.
    decoder_->ReleaseWorkspace();
    retained_.Release();
    holds_memory_ = false;
    started = service_->queue().Start(room, o.max_prefill_tokens);
  }
  if (started.empty()) return;
  service_->ReportCache();
  const ReformerModel& model = service_->model();
  for (std::unique_ptr<SequenceTask>& base : started) {
    auto live = std::make_unique<Live>();
    live->task.reset(static_cast<GenTask*>(base.release()));
    const GenTask& t = *live->task;
    service_->ChangeActive(1);
    absl::StatusOr<std::unique_ptr<DecodeState>> state =
        DecodeState::Create(model, t.request->prompt, t.params.max_new_tokens, t.params.mode);
    if (!state.ok()) {
      GenerationEvent last;
      last.status = state.status();
      Finish(std::move(live), std::move(last));
      continue;
    }
    live->state = *std::move(state);
    live->seq = std::make_unique<GenerationSequence>(model.config(), model.tokenizer(), t.request->prompt,
                                                     t.params);
    live->logits.resize(static_cast<size_t>(model.config().vocab_size));
    pending_.push_back(std::move(live));
  }
}

absl::Status Worker::StopStatus(Live& live, absl::Time now) const {
  const GenTask& t = *live.task;
  if (service_->aborted()) {
    return absl::UnavailableError(absl::StrCat("the server is shutting down; the generation was cut short after ",
                                               live.generated, " tokens"));
  }
  if (t.cancelled != nullptr && t.cancelled->load(std::memory_order_relaxed)) {
    return absl::CancelledError(absl::StrCat("the generation was cancelled after ", live.generated, " tokens"));
  }
  if (now >= t.deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat("the deadline passed after ", live.generated, " generated tokens"));
  }
  if (now - live.paused_since >= service_->options().stalled_timeout) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the client took no message for ", absl::FormatDuration(now - live.paused_since),
        " (--generate_stalled_timeout_s) while ", t.sink->unsent(), " waited; the generation was stopped after ",
        live.generated, " tokens and its cache freed"));
  }
  return absl::OkStatus();
}

void Worker::Prefill() {
  std::vector<std::unique_ptr<Live>> group;
  const absl::Time now = service_->clock().Now();
  for (std::unique_ptr<Live>& live : pending_) {
    absl::Status stop = StopStatus(*live, now);
    if (!stop.ok()) {
      GenerationEvent last;
      last.status = std::move(stop);
      Finish(std::move(live), std::move(last));
    } else {
      group.push_back(std::move(live));
    }
  }
  pending_.clear();
  if (group.empty()) return;
  std::vector<DecodeState*> states;
  std::vector<float*> logits;
  for (std::unique_ptr<Live>& live : group) {
    states.push_back(live->state.get());
    logits.push_back(live->logits.data());
  }
  const Clock& clock = service_->clock();
  const CancelFn cancel = [&] {
    const absl::Time t = clock.Now();
    for (std::unique_ptr<Live>& live : group)
      if (StopStatus(*live, t).ok()) return false;
    return true;
  };
  // Between two parts of the prompt pass (layers, row tiles of a product, heads' attention;
  // decoder.h), the running sequences take one step if at least as long as their last step took
  // has passed since it ended: they keep producing tokens while a long prompt fills its cache, and
  // the prompt pass keeps at least about half of the worker's time.
  const BetweenLayersFn between = [this, &clock](int64_t) {
    if (clock.Now() - last_step_end_ >= last_step_time_) StepActive();
    return absl::OkStatus();
  };
  absl::Status status;
  try {
    status = decoder_->Prefill(absl::MakeSpan(states), absl::MakeSpan(logits), cancel, between);
  } catch (...) {
    status = CurrentExceptionStatus("a prompt pass");
  }
  holds_memory_ = true;
  MemoryReservation freed;
  for (std::unique_ptr<Live>& live : group) freed.Merge(std::move(live->task->prefill_memory));
  KeepRetained(std::move(freed));
  const absl::Time done = clock.Now();
  for (std::unique_ptr<Live>& live : group) {
    // A cancelled pass (every sequence of it stopped) reports each sequence's own reason.
    absl::Status stop = status.ok() || absl::IsCancelled(status) ? StopStatus(*live, done) : status;
    if (stop.ok() && !status.ok()) stop = status;
    if (!stop.ok()) {
      GenerationEvent last;
      last.status = std::move(stop);
      Finish(std::move(live), std::move(last));
      continue;
    }
    AcceptAndEmit(std::move(live), done);
  }
}

bool Worker::StepActive() {
  const absl::Time now = service_->clock().Now();
  const GenerationOptions& o = service_->options();
  std::vector<std::unique_ptr<Live>> step, paused;
  for (std::unique_ptr<Live>& live : active_) {
    const bool full = live->task->sink->unsent() >= o.max_unsent;
    if (!full) live->paused_since = absl::InfiniteFuture();
    if (full && live->paused_since == absl::InfiniteFuture()) live->paused_since = now;
    absl::Status stop = StopStatus(*live, now);
    if (!stop.ok()) {
      GenerationEvent last;
      last.status = std::move(stop);
      Finish(std::move(live), std::move(last));
    } else {
      (full ? paused : step).push_back(std::move(live));
    }
  }
  active_ = std::move(paused);
  if (step.empty()) return false;
  std::vector<DecodeState*> states;
  std::vector<int32_t> tokens;
  std::vector<float*> logits;
  bool recompute = false;
  for (std::unique_ptr<Live>& live : step) {
    states.push_back(live->state.get());
    tokens.push_back(live->next);
    logits.push_back(live->logits.data());
    recompute |= live->state->mode() == DecodeMode::kRecompute;
  }
  absl::Status status;
  try {
    status = decoder_->Step(absl::MakeSpan(states), tokens, absl::MakeSpan(logits),
                            [this] { return service_->aborted(); });
  } catch (...) {
    status = CurrentExceptionStatus("a decoding step");
  }
  if (recompute) KeepRetained(MemoryReservation());
  const absl::Time done = service_->clock().Now();
  last_step_end_ = done;
  last_step_time_ = done - now;
  for (std::unique_ptr<Live>& live : step) {
    if (status.ok()) {
      AcceptAndEmit(std::move(live), done);
      continue;
    }
    GenerationEvent last;
    last.status = absl::IsCancelled(status) ? StopStatus(*live, done) : status;
    if (last.status.ok()) last.status = status;
    Finish(std::move(live), std::move(last));
  }
  return true;
}

// Chooses the sequence's next token from its logits and streams it; the sequence goes on running
// (back into active_) or ends.
void Worker::AcceptAndEmit(std::unique_ptr<Live> live, absl::Time now) {
  GenTask& t = *live->task;
  live->next = live->seq->Accept(live->logits);
  GenerationDelta d = live->seq->TakeDelta();
  GenerationEvent e;
  const int64_t n = static_cast<int64_t>(d.token_ids.size());
  e.token_ids = std::move(d.token_ids);
  if (t.request->return_logprobs) e.logprobs = std::move(d.logprobs);
  e.text = std::move(d.text);
  e.finish = d.finish;
  if (GenerationObserver* obs = service_->observer(); obs != nullptr) {
    obs->OnGeneratedTokens(n);
    if (live->generated == 0) {
      obs->OnTimeToFirstToken(absl::ToDoubleSeconds(now - t.received));
    } else {
      obs->OnTokenInterval(absl::ToDoubleSeconds(now - live->last_token));
    }
  }
  if (live->generated == 0) live->first_token = now;
  live->generated += n;
  live->last_token = now;
  if (e.finish != FinishReason::kNone) {
    Finish(std::move(live), std::move(e));
    return;
  }
  t.sink->OnEvent(std::move(e));
  active_.push_back(std::move(live));
}

void Worker::KeepRetained(MemoryReservation freed) {
  retained_.Release();
  const size_t keep = decoder_->retained_workspace_bytes();
  if (keep == 0) return;
  if (keep <= freed.bytes()) {
    retained_ = freed.Split(keep, MemoryKind::kWorking);
    return;
  }
  std::optional<MemoryReservation> extra =
      service_->budget().TryReserve(keep - freed.bytes(), MemoryKind::kWorking);
  if (!extra) {
    decoder_->ReleaseWorkspace();  // no room to keep it: give it back
    return;
  }
  retained_ = std::move(freed);
  retained_.Merge(std::move(*extra));
}

void Worker::FailAll(const absl::Status& status) {
  std::vector<std::unique_ptr<Live>> all = std::move(pending_);
  for (std::unique_ptr<Live>& live : active_) all.push_back(std::move(live));
  pending_.clear();
  active_.clear();
  for (std::unique_ptr<Live>& live : all) {
    GenerationEvent last;
    last.status = status;
    Finish(std::move(live), std::move(last));
  }
}

// Frees the sequence's memory, then hands the stream its last event.
void Worker::Finish(std::unique_ptr<Live> live, GenerationEvent last) {
  GenerationSink* sink = live->task->sink;
  if (last.status.ok()) {
    const GenTask& t = *live->task;
    const absl::Time now = service_->clock().Now();
    last.seed = t.params.sampling.seed;
    last.usage.prompt_tokens = static_cast<int64_t>(t.request->prompt.size());
    last.usage.generated_tokens = live->generated;
    last.usage.queue_seconds = absl::ToDoubleSeconds(t.started - t.received);
    last.usage.time_to_first_token_seconds = absl::ToDoubleSeconds(live->first_token - t.received);
    last.usage.total_seconds = absl::ToDoubleSeconds(now - t.received);
  }
  live.reset();  // the cache, and every reservation of the sequence, are returned here
  service_->ChangeActive(-1);
  sink->OnEvent(std::move(last));
  service_->Ended();
}

}  // namespace

absl::Status GenerationOptions::Validate() const {
  auto at_least = [](const char* flag, int64_t value, int64_t min) {
    return value >= min ? absl::OkStatus()
                        : absl::InvalidArgumentError(absl::StrFormat("--%s must be >= %d, got %d", flag, min, value));
  };
  for (absl::Status s : {at_least("generate_workers", workers, 1),
                         at_least("generate_threads_per_worker", threads_per_worker, 1),
                         at_least("workspace_budget_bytes", workspace_budget_bytes, 1),
                         at_least("generate_max_active", max_active, 1),
                         at_least("generate_max_prefill_tokens", max_prefill_tokens, 1),
                         at_least("generate_max_waiting", max_waiting, 1),
                         at_least("generate_max_unsent", max_unsent, 1)}) {
    if (!s.ok()) return s;
  }
  if (stalled_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--generate_stalled_timeout_s must be > 0, got ", absl::FormatDuration(stalled_timeout)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GenerationService>> GenerationService::Create(
    std::shared_ptr<const ReformerModel> model, const GenerationOptions& options,
    std::shared_ptr<MemoryBudget> budget, const Clock* clock, GenerationObserver* observer) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (model == nullptr || budget == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError("GenerationService needs a model, a memory budget and a clock");
  }
  auto service = std::make_unique<GenerationServiceImpl>(std::move(model), options, std::move(budget), clock,
                                                         observer);
  if (absl::Status s = service->Start(); !s.ok()) return s;
  return std::unique_ptr<GenerationService>(std::move(service));
}

}  // namespace reformer::serving
