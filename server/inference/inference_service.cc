// InferenceService::Create: the service on engine Sessions (one per worker, created on its thread).
#include "server/inference/inference_service.h"

#include <utility>

#include "engine/base/status_macros.h"
#include "server/inference/document_runner.h"

namespace reformer::serving {
namespace {

class SessionRunner final : public DocumentRunner {
 public:
  explicit SessionRunner(std::unique_ptr<Session> session) : session_(std::move(session)) {}
  absl::Status Run(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                   absl::Span<const OutputView> dst, const CancelFn& cancel) override {
    return session_->RunDocuments(documents, outputs, dst, cancel);
  }
  size_t workspace_high_water_bytes() const override { return session_->workspace_high_water_bytes(); }
  void reset_workspace_high_water() override { session_->reset_workspace_high_water(); }
  void ReleaseIdleMemory() override { session_->ReleaseWorkspace(); }

 private:
  std::unique_ptr<Session> session_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceService>> InferenceService::Create(
    std::shared_ptr<const ReformerModel> model, const InferenceOptions& options, const Clock* clock,
    InferenceObserver* observer) {
  if (model == nullptr) return absl::InvalidArgumentError("InferenceService::Create: null model");
  SessionOptions session_options;
  session_options.num_threads = options.threads_per_worker;
  session_options.workspace_budget_bytes = options.workspace_budget_bytes;
  ModelLimits limits;
  limits.context = model->config().max_position_embeddings;
  limits.vocab_size = model->config().vocab_size;
  limits.hidden_width = 2 * model->config().hidden_size;
  RunnerFactory factory = [model, session_options](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
    ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::Create(model, session_options));
    return std::unique_ptr<DocumentRunner>(new SessionRunner(std::move(session)));
  };
  BatchScheduler::MemoryEstimateFn estimate = [model, session_options](absl::Span<const int64_t> lengths,
                                                                       uint32_t outputs) {
    // The scheduler's budget covers the outputs too (they are caller memory, not the engine's).
    return EstimatePeakWorkingBytes(model->config(), lengths, outputs, session_options) +
           EstimateOutputBytes(model->config(), lengths, outputs);
  };
  return CreateInferenceServiceWithRunners(model, limits, options, clock, observer, std::move(factory),
                                           std::move(estimate));
}

}  // namespace reformer::serving
