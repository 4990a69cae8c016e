// Test harness for the gRPC layer: a scriptable fake InferenceService, a byte tokenizer and an
// in-process server on localhost:0 with the real services, metrics and health wiring.
#pragma once

#include <atomic>
#include <cmath>
#include <new>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "engine/model/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "proto/grpc_service.grpc.pb.h"
#include "proto/reformer.grpc.pb.h"
#include "server/batching/clock.h"
#include "server/grpc/grpc_server.h"
#include "server/health/health_state.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace reformer::serving::testing {

// Byte-level tokenizer folded into a small vocabulary: id = 2 + byte % 38 (ids 2..39).
class ByteTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(2 + static_cast<int32_t>(c) % 38);
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s.push_back(static_cast<char>(id - 2));
    return s;
  }
  int64_t TokenBytes(int32_t id) const override { return id >= 2 ? 1 : 0; }
  std::string Name() const override { return "bytes"; }
};

// Deterministic per-document outputs: a function of the document's own ids and positions only,
// so any dependence on padding or batch mates in the RPC layer shows up as a difference.
inline DocumentOutput FakeCompute(absl::Span<const int32_t> doc, uint32_t outputs, int64_t vocab,
                                  int64_t width) {
  DocumentOutput out;
  const int64_t n = static_cast<int64_t>(doc.size());
  out.num_tokens = n;
  if (outputs & kOutputLogits) {
    out.logits.resize(static_cast<size_t>(n * vocab));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t v = 0; v < vocab; ++v)
        out.logits[t * vocab + v] = static_cast<float>(std::sin(doc[t] * 0.37 + v * 0.11 + t * 0.013));
  }
  std::vector<float> hidden(static_cast<size_t>(n * width));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < width; ++k)
      hidden[t * width + k] = static_cast<float>(std::cos(doc[t] * 0.5 + k + t * 0.01));
  if (outputs & kOutputHiddenStates) out.hidden_states = hidden;
  if (outputs & kOutputTokenLogprobs) {
    out.token_logprobs.resize(static_cast<size_t>(n));
    for (int64_t t = 1; t < n; ++t) out.token_logprobs[t] = -0.1f - 0.01f * static_cast<float>(doc[t] % 50);
  }
  if (outputs & kOutputEmbedding) {
    out.embedding.assign(static_cast<size_t>(width), 0.f);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < width; ++k) out.embedding[k] += hidden[t * width + k] / n;
  }
  return out;
}

// What the fake service saw of a submitted request (the request itself moves on).
struct SubmittedRequest {
  std::string id;
  std::vector<std::vector<int32_t>> documents;
  uint32_t outputs = 0;  // engine flags
  int priority = 0;
  absl::Time deadline;
  std::shared_ptr<std::atomic<bool>> cancelled;
  std::string method;
};

// Writes one document's fake outputs into its view (as the engine does).
inline void WriteFake(absl::Span<const int32_t> doc, uint32_t outputs, int64_t vocab, int64_t width,
                      const OutputView& view) {
  const DocumentOutput out = FakeCompute(doc, outputs, vocab, width);
  auto copy = [](const std::vector<float>& v, float* dst) {
    if (dst != nullptr) std::copy(v.begin(), v.end(), dst);
  };
  copy(out.logits, view.logits);
  copy(out.hidden_states, view.hidden_states);
  copy(out.token_logprobs, view.token_logprobs);
  copy(out.embedding, view.embedding);
}

// A scriptable InferenceService: runs Validate() as the real one does, computes FakeCompute on its
// own thread into the request's buffers; can hold requests (answering only cancellations and
// expiries while held), reject, or fail.
class FakeInference final : public InferenceService {
 public:
  FakeInference(const Clock* clock, const RequestLimits& limits, InferenceObserver* observer)
      : clock_(clock), limits_(limits), observer_(observer), thread_([this] { Loop(); }) {}
  ~FakeInference() override { Shutdown(); }

  absl::Status Submit(std::unique_ptr<InferenceRequest> request, DoneCallback done) override {
    if (throw_on_submit_.load()) throw std::bad_alloc();
    if (absl::Status s = Validate(*request, limits_); !s.ok()) {
      if (observer_ != nullptr) observer_->OnRejected(absl::IsResourceExhausted(s) ? "too_large" : "invalid");
      return s;
    }
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::UnavailableError("shut down");
    if (draining_) return absl::UnavailableError("draining");
    if (!reject_.ok()) return reject_;
    if (static_cast<int64_t>(queue_.size()) >= max_queue_) {
      return absl::UnavailableError("queue full: 1 request queued, limit 1");
    }
    ++submitted_;
    last_ = Snapshot(*request);
    queue_.push_back({std::move(request), std::move(done)});
    return absl::OkStatus();
  }
  void StartDraining() override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  bool WaitIdle(absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &FakeInference::IdleLocked), timeout);
  }
  void Shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      stop_ = true;
    }
    thread_.join();
  }
  const ReformerModel& model() const override { std::abort(); }
  const InferenceOptions& options() const override { return options_; }
  int64_t queued_requests() const override {
    absl::MutexLock lock(&mu_);
    return static_cast<int64_t>(queue_.size());
  }
  int64_t queued_tokens() const override { return 0; }

  void SetHold(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_ = hold;
  }
  void SetReject(absl::Status status) {
    absl::MutexLock lock(&mu_);
    reject_ = std::move(status);
  }
  void SetMaxQueue(int64_t n) {
    absl::MutexLock lock(&mu_);
    max_queue_ = n;
  }
  // Submit throws std::bad_alloc (as an allocation failure deep in the service would).
  void SetThrowOnSubmit(bool on) { throw_on_submit_.store(on); }
  // Answers every computed request with `status` instead (OK = compute normally).
  void SetFail(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_ = std::move(status);
  }
  int64_t submitted() const {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  // Waits until `n` requests were submitted (real time, bounded).
  bool WaitSubmitted(int64_t n, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto cond = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return submitted_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
  }
  std::shared_ptr<SubmittedRequest> last() const {
    absl::MutexLock lock(&mu_);
    return last_;
  }

 private:
  struct Item {
    std::unique_ptr<InferenceRequest> request;
    DoneCallback done;
  };
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty(); }

  static std::shared_ptr<SubmittedRequest> Snapshot(const InferenceRequest& r) {
    auto s = std::make_shared<SubmittedRequest>();
    s->id = r.id;
    for (int64_t d = 0; d < r.documents.size(); ++d) {
      s->documents.emplace_back(r.documents[d].begin(), r.documents[d].end());
    }
    s->outputs = r.engine_outputs();
    s->priority = r.priority;
    s->deadline = r.deadline;
    s->cancelled = r.cancelled;
    s->method = r.method;
    return s;
  }

  InferenceResult Compute(Item& item) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    InferenceResult result;
    InferenceRequest& r = *item.request;
    result.status = fail_.ok() ? r.AllocateOutputs() : fail_;
    if (!result.status.ok()) return result;
    for (int64_t d = 0; d < r.documents.size(); ++d) {
      WriteFake(r.documents[d], r.engine_outputs(), r.dims.vocab, r.dims.embedding, r.View(d));
    }
    result.tokens = r.documents.total_tokens();
    result.queue_seconds = 0.001;
    result.compute_seconds = 0.002;
    return result;
  }

  void Loop() {
    for (;;) {
      std::vector<std::pair<Item, InferenceResult>> ready;
      bool stop = false;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](FakeInference* f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) {
                                   return f->stop_ || (!f->hold_ && !f->queue_.empty());
                                 },
                                 this),
                             absl::Milliseconds(5));
        stop = stop_;
        const absl::Time now = clock_->Now();
        for (auto it = queue_.begin(); it != queue_.end();) {
          InferenceResult result;
          InferenceRequest& r = *it->request;
          if (r.cancelled->load()) {
            result.status = absl::CancelledError("cancelled");
          } else if (now >= r.deadline) {
            result.status = absl::DeadlineExceededError("deadline exceeded in queue");
          } else if (stop) {
            result.status = absl::UnavailableError("shutting down");
          } else if (!hold_) {
            result = Compute(*it);
          } else {
            ++it;
            continue;
          }
          ready.emplace_back(std::move(*it), std::move(result));
          it = queue_.erase(it);
        }
      }
      for (auto& [item, result] : ready) {
        result.request = std::move(item.request);
        item.done(std::move(result));
      }
      if (stop) return;
    }
  }

  const Clock* clock_;
  const RequestLimits limits_;
  InferenceObserver* const observer_;
  InferenceOptions options_;
  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<SubmittedRequest> last_ ABSL_GUARDED_BY(mu_);
  absl::Status reject_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_ ABSL_GUARDED_BY(mu_);
  int64_t max_queue_ ABSL_GUARDED_BY(mu_) = 1 << 20;
  int64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> throw_on_submit_{false};
  std::thread thread_;
};

struct TestServerOptions {
  bool causal = true;
  bool tokenizer = true;
  bool ready = true;
  int64_t vocab = 40;
  int64_t hidden = 3;  // embedding width 6
  int64_t context = 64;
  int64_t max_tokens_per_request = 128;
  int64_t max_response_bytes = 1 << 20;
  StreamLimits stream;  // ModelStreamInfer bounds
  const Clock* clock = nullptr;  // the adapters' clock; nullptr = real time
};

// Everything main builds, in the same order, around a FakeInference.
class TestServer {
 public:
  explicit TestServer(const TestServerOptions& o = {})
      : metrics_(&registry_, MetricsOptions{}),
        inference_(&clock_, RequestLimits{o.context, o.vocab, o.max_tokens_per_request, o.max_response_bytes},
                   &metrics_) {
    model_.name = "fake";
    model_.config.vocab_size = o.vocab;
    model_.config.hidden_size = o.hidden;
    model_.config.max_position_embeddings = o.context;
    model_.config.is_decoder = o.causal;
    model_.config.attn_layers = {AttnType::kLocal, AttnType::kLsh};
    if (o.tokenizer) {
      model_.tokenizer = &tokenizer_;
      model_.tokenizer_name = "bytes";
    }
    model_.rotations_source = "seed 0";
    model_.max_batch_size = 16;
    ServiceEnv& env = env_;
    env.inference = &inference_;
    env.model = &model_;
    env.health = &health_;
    env.metrics = &metrics_;
    env.clock = o.clock != nullptr ? o.clock : &clock_;
    env.limits.max_tokens_per_request = o.max_tokens_per_request;
    env.limits.max_response_bytes = o.max_response_bytes;
    GrpcServerOptions go;
    go.address = "127.0.0.1:0";
    go.stream = o.stream;
    auto server = GrpcServer::Start(go, env, &health_);
    if (!server.ok()) std::abort();
    server_ = *std::move(server);
    if (o.ready) health_.SetReady();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    kserve_ = inference::GRPCInferenceService::NewStub(channel_);
    api_ = reformer::v1::ReformerService::NewStub(channel_);
  }
  ~TestServer() {
    inference_.Shutdown();
    server_->Shutdown();
  }
  int port() const { return server_->port(); }
  GrpcServer& server() { return *server_; }

  FakeInference& inference() { return inference_; }
  HealthState& health() { return health_; }
  ServerMetrics& metrics() { return metrics_; }
  prometheus::Registry& registry() { return registry_; }
  const ServedModel& model() const { return model_; }
  // What the gRPC services borrow; another adapter (HTTP) can be started on the same.
  const ServiceEnv& env() const { return env_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  inference::GRPCInferenceService::Stub& kserve() { return *kserve_; }
  reformer::v1::ReformerService::Stub& api() { return *api_; }

 private:
  RealClock clock_;
  ByteTokenizer tokenizer_;
  ServedModel model_;
  HealthState health_;
  prometheus::Registry registry_;
  ServerMetrics metrics_;
  FakeInference inference_;
  ServiceEnv env_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
  std::unique_ptr<reformer::v1::ReformerService::Stub> api_;
};

}  // namespace reformer::serving::testing
