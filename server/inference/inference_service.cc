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
  size_t retained_bytes() const override { return session_->retained_workspace_bytes(); }

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
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  session_options.workspace_budget_bytes = static_cast<size_t>(options.workspace_budget_bytes);
  ModelLimits limits;
  limits.context = model->config().max_position_embeddings;
  limits.vocab_size = model->config().vocab_size;
  limits.hidden_width = 2 * model->config().hidden_size;
  RunnerFactory factory = [model, session_options](int) -> absl::StatusOr<std::unique_ptr<DocumentRunner>> {
    ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::Create(model, session_options));
    return std::unique_ptr<DocumentRunner>(new SessionRunner(std::move(session)));
  };
  ServiceMemory memory;
  // Working memory excludes the outputs: they are caller memory, reserved per request (below). The
  // model's overload counts the activation conversion buffers of a bfloat16 or int8 model too.
  memory.working = [model, session_options](absl::Span<const int64_t> lengths, uint32_t outputs) {
    return EstimatePeakWorkingBytes(*model, lengths, outputs, session_options);
  };
  memory.output = [model](int64_t length, uint32_t outputs) {
    const int64_t one[1] = {length};
    return EstimateOutputBytes(model->config(), absl::MakeConstSpan(one), outputs);
  };
  return CreateInferenceServiceWithRunners(model, limits, options, clock, observer, std::move(factory),
                                           std::move(memory));
}

}  // namespace reformer::serving
