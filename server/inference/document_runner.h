// DocumentRunner: what an InferenceService worker computes with. Production wraps an engine Session
// (server/inference/inference_service.cc); tests substitute fakes to exercise the service's threading,
// cancellation and draining without a model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/engine_api.h"
#include "server/batching/batch_scheduler.h"
#include "server/inference/inference_service.h"

namespace reformer::serving {

// Thread-confined: created on the worker thread that uses it, never shared.
class DocumentRunner {
 public:
  virtual ~DocumentRunner() = default;
  // Same contract as Session::RunDocuments: each requested output of document d is written into
  // dst[d] (caller memory, OutputView), CANCELLED when `cancel` returned true.
  virtual absl::Status Run(absl::Span<const absl::Span<const int32_t>> documents, uint32_t outputs,
                           absl::Span<const OutputView> dst, const CancelFn& cancel) = 0;
  virtual size_t workspace_high_water_bytes() const = 0;
  virtual void reset_workspace_high_water() = 0;
  // Called when the worker finds no work: return memory kept for the next run.
  virtual void ReleaseIdleMemory() {}
  // Bytes kept between runs (released by ReleaseIdleMemory; the next run first trims them to its own
  // plan). The worker holds them in the memory budget while it keeps them.
  virtual size_t retained_bytes() const { return 0; }
};

// Called once on each worker thread (argument: worker index) before it takes work.
using RunnerFactory = std::function<absl::StatusOr<std::unique_ptr<DocumentRunner>>(int worker)>;

struct ModelLimits {
  int64_t context = 0;       // max tokens per document (max_position_embeddings)
  int64_t vocab_size = 0;    // token ids must be in [0, vocab_size); floats per logits row
  int64_t hidden_width = 0;  // floats per hidden-state row and per embedding (2H)
};

// What the service accounts to the memory budget. Every field may be null.
struct ServiceMemory {
  BatchScheduler::MemoryEstimateFn working;  // batch lengths, output flags → peak working bytes
  BatchScheduler::OutputBytesFn output;      // one document's length, output flags → its outputs' bytes
  std::shared_ptr<MemoryBudget> budget;      // null: the service creates one of options.memory_budget_bytes
};

// The service on any runner. `model` may be null (then model() must not be called).
// `clock`/`observer` are borrowed; `observer` may be null.
absl::StatusOr<std::unique_ptr<InferenceService>> CreateInferenceServiceWithRunners(
    std::shared_ptr<const ReformerModel> model, const ModelLimits& limits, const InferenceOptions& options,
    const Clock* clock, InferenceObserver* observer, RunnerFactory factory, ServiceMemory memory);

// The scheduler options the service derives from its own (exposed for tests and logs).
SchedulerOptions ToSchedulerOptions(const InferenceOptions& options, const ModelLimits& limits);

}  // namespace reformer::serving
