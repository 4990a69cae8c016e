// InferenceService: the server's compute core, between the adapters (gRPC, HTTP) and the engine. No gRPC.
//
// Owns the request scheduler (server/batching) and the worker threads; each worker thread owns one
// engine Session (thread-confined). An adapter decodes a wire request into an InferenceRequest
// (server/request), calls Submit(), and answers from the DoneCallback, which hands the request back
// with the engine's outputs written into its response buffers.
//
// Contract:
//  - Submit() either rejects synchronously (returns a non-OK status; `done` is NOT called; the
//    request is dropped) or accepts: then `done` is called exactly once, later, on a worker thread
//    (or on the thread that calls Shutdown/expiry sweep), with OK + the request (outputs written) or
//    an error (DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE on shutdown after drain timeout,
//    RESOURCE_EXHAUSTED when its response buffers cannot be allocated, INTERNAL on engine bug).
//  - Rejections: Validate() (server/request/validate.h: INVALID_ARGUMENT bad documents/ids/outputs,
//    RESOURCE_EXHAUSTED response above max_response_bytes) runs first, then the scheduler's admission
//    (RESOURCE_EXHAUSTED can never fit batch/memory limits; UNAVAILABLE queue full or draining).
//    Messages carry the numbers.
//  - Cancellation: the caller sets `*request.cancelled = true`; a queued request is answered CANCELLED
//    without computing; a running one stops within about one layer.
//  - Deadlines: `deadline` (absolute, on the injected clock). Expired requests are answered
//    DEADLINE_EXCEEDED without computing; a running one stops within one layer.
//  - A request asking only for outputs the request layer writes itself (token_ids, lengths) is
//    queued and answered like any other but runs no engine forward.
//  - Memory: one process-wide MemoryBudget (--memory_budget_bytes, server/batching/memory_budget.h)
//    bounds the working memory of all workers' batches plus the outputs of requests until their
//    responses are sent. A request's outputs (its response buffers, InferenceRequest::ResponseBytes,
//    padding included) are reserved when it starts computing; an OK result
//    carries that reservation (InferenceResult::output_memory) and the caller must keep it until the
//    response has been sent (gRPC: until the RPC's OnDone). A request that could never fit is
//    rejected RESOURCE_EXHAUSTED; one that does not fit now waits in the queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/model/engine_api.h"
#include "server/batching/memory_budget.h"
#include "server/request/inference_request.h"

namespace reformer::serving {

struct InferenceResult {
  absl::Status status;
  // The submitted request, handed back; when OK its response buffers hold every requested output.
  std::unique_ptr<InferenceRequest> request;
  int64_t tokens = 0;                   // real tokens processed
  double queue_seconds = 0;
  double compute_seconds = 0;
  // When OK: the budget's hold on this request's outputs (kind kOutput). Keep it (move it along with
  // the response) until the response has been sent; destroying it returns the bytes to the budget.
  MemoryReservation output_memory;
};

using DoneCallback = std::function<void(InferenceResult)>;

struct InferenceOptions {
  int workers = 1;                       // worker threads, each with its own engine Session
  int threads_per_worker = 1;            // OpenMP threads per Session
  int64_t max_batch_tokens = 65536;      // tokens per formed batch
  int64_t max_batch_size = 32;           // documents per formed batch
  // The process-wide budget: working memory of all running batches + outputs of requests until their
  // responses are sent. Signed so that a negative flag value is rejected by Validate(), not wrapped.
  int64_t memory_budget_bytes = int64_t{4} << 30;
  int64_t workspace_budget_bytes = int64_t{256} << 20;  // engine workspace bound per worker
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  int64_t max_queue_requests = 1024;
  int64_t max_queue_tokens = 4 << 20;
  int64_t max_tokens_per_request = 0;    // 0 = 8 x model context
  int64_t max_response_bytes = int64_t{512} << 20;  // bytes of a request's requested outputs
  // Batches above this many tokens are "long"; with workers >= 2 at most workers-1 long batches run
  // at once, so short requests always have a worker (see server/batching/batch_scheduler.h for the
  // latency bound). 0 disables the reservation.
  int64_t long_batch_tokens = 16384;
  // A batch of several documents holds at most this many tokens; 0 = max_batch_tokens. Equal to
  // long_batch_tokens by default, so only a single long document forms a long batch and batches of
  // several documents spread over all workers (server/batching/batch_scheduler.h, "Batch fill").
  int64_t batch_fill_tokens = 16384;
  // Documents in one batch have lengths within this factor of each other (similar-length grouping).
  double length_ratio = 4.0;
  // A request queued this long heads the queue as if it had priority 1 (by arrival), so lower
  // priorities cannot starve (bound in server/batching/batch_scheduler.h). InfiniteDuration() = off.
  absl::Duration priority_aging = absl::Seconds(10);
  // INVALID_ARGUMENT naming the flag (--workers, --memory_budget_bytes, ...) for any value that makes
  // no sense (zero or negative sizes and counts, length ratio < 1, negative delays).
  absl::Status Validate() const;
};

// Receives scheduler/worker events (implemented by server/metrics with Prometheus). All methods are
// called from scheduler or worker threads and must be thread-safe and cheap.
class InferenceObserver {
 public:
  virtual ~InferenceObserver() = default;
  virtual void OnQueueChanged(int64_t /*queued_requests*/, int64_t /*queued_tokens*/) {}
  virtual void OnRejected(const std::string& /*reason*/) {}  // "queue_full", "too_large", "draining", "invalid"
  virtual void OnBatch(int64_t /*documents*/, int64_t /*tokens*/) {}
  // The engine time of a batch OnBatch reported, once it has run (ModelStatistics' batch_stats).
  virtual void OnBatchComputed(int64_t /*documents*/, double /*seconds*/) {}
  virtual void OnRequestDone(const std::string& /*method*/, const absl::Status& /*status*/, int64_t /*tokens*/,
                             double /*queue_seconds*/, double /*compute_seconds*/) {}
  virtual void OnWorkspaceBytes(int /*worker*/, size_t /*bytes*/) {}
  virtual void OnInflightChanged(int64_t /*inflight*/) {}
  // The process-wide memory budget: its total (once, at start) and the bytes reserved of each kind
  // ("working", "output", "cache") whenever they may have changed (the latest call holds).
  virtual void OnMemoryBudget(size_t /*total_bytes*/) {}
  virtual void OnMemoryReserved(const std::string& /*kind*/, size_t /*bytes*/) {}
};

class Clock;

class InferenceService {
 public:
  // Starts `options.workers` threads, each creating its own Session on `model`. `clock` and
  // `observer` are borrowed and must outlive the service.
  static absl::StatusOr<std::unique_ptr<InferenceService>> Create(
      std::shared_ptr<const ReformerModel> model, const InferenceOptions& options, const Clock* clock,
      InferenceObserver* observer);
  virtual ~InferenceService() = default;  // Shutdown() if not done yet

  virtual absl::Status Submit(std::unique_ptr<InferenceRequest> request, DoneCallback done) = 0;

  // Stop admitting (new Submit → UNAVAILABLE); queued and running work continues.
  virtual void StartDraining() = 0;
  // Waits until nothing is queued or running, or `timeout` passes; true if idle.
  virtual bool WaitIdle(absl::Duration timeout) = 0;
  // Answers whatever is still queued/running with UNAVAILABLE/CANCELLED and joins the workers.
  virtual void Shutdown() = 0;

  virtual const ReformerModel& model() const = 0;
  virtual const InferenceOptions& options() const = 0;
  virtual int64_t queued_requests() const = 0;
  virtual int64_t queued_tokens() const = 0;
  // The process-wide budget the service schedules under (null for services without one), for other
  // holders of memory (e.g. response buffers, generation caches) to reserve from.
  virtual std::shared_ptr<MemoryBudget> memory_budget() const { return nullptr; }
};

}  // namespace reformer::serving
