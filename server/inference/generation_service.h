// GenerationService: streamed text generation with continuous (iteration-level) batching, between
// the adapters (gRPC Generate, HTTP generate/generate_stream) and the engine's Decoder. No gRPC.
//
// Threads. `workers` generation worker threads, each owning one engine Decoder (thread-confined) and
// the sequences it started; they are separate from the InferenceService's forward workers
// (ModelInfer, Score, Embed), whose scheduler and latency bound (server/batching/batch_scheduler.h)
// are unchanged. Both pools share the CPUs (the OS time-shares them under mixed load: a forward
// batch and a decoding step then each run slower, never stall) and the process-wide memory budget.
//
// A worker's loop (continuous batching):
//  1. start waiting sequences (SequenceQueue: priority, arrival, memory) up to `max_active` of its own;
//  2. new sequences: one prompt pass for all of them (Decoder::Prefill); between two layers of that
//     forward it runs one decoding step of its running sequences, so a long prompt never stalls the
//     streams already producing tokens;
//  3. otherwise one decoding step of all its running sequences together (Decoder::Step);
//  4. after every prompt pass and step: each sequence's GenerationSequence (engine/model/
//     generation.h: token choice, EOS, stop strings, whole UTF-8 characters) turns its logits into a
//     token and a streamed event; a finished sequence frees its cache at once.
// Latency bounds. A running stream gets a token at least once per (its worker's step over at most
// max_active sequences + one layer of a prompt pass running at the same time). A waiting request
// starts when a worker has a free slot and its memory fits (it never fails for lack of room unless
// it can never fit); its first token then follows one prompt pass.
//
// Batch invariance. Every sequence is computed exactly as alone: a prompt pass's documents are
// bitwise independent of their batch mates, a step's rows of theirs (engine/model/decoder.h), and a
// sequence keeps its decoding mode and path whatever the load (nothing here switches a sequence to
// another mode, tile or kernel under pressure). So tokens and logprobs are bitwise the same alone or
// beside any other requests; with the seed, sampled tokens too (tests/server/grpc_generate_test.cc).
//
// Contract of Submit: it validates (server/request/validate.h, the one check) and admits, or returns
// the error (the sink is never called). Once accepted, the sink receives the stream's events on a
// worker thread, in order, and exactly one last event (a finish reason, or an error: CANCELLED,
// DEADLINE_EXCEEDED, UNAVAILABLE at shutdown, RESOURCE_EXHAUSTED, INTERNAL); the service never
// touches the sink after that one. Cancellation (the request's flag) and the deadline end a sequence
// before its next step (a prompt pass stops within one layer). A sink that has `max_unsent` events
// not yet taken by its client pauses its sequence (it leaves the steps, keeping its cache) until the
// client reads; paused for `stalled_timeout`, it ends RESOURCE_EXHAUSTED: a client that does not read never
// makes the server hold unbounded memory, and holds its cache at most that long.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model/generation.h"
#include "server/batching/clock.h"
#include "server/batching/memory_budget.h"
#include "server/request/generate_request.h"
#include "server/request/validate.h"

namespace reformer::serving {

struct GenerationUsage {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double queue_seconds = 0;                // receipt → start of the prompt pass
  double time_to_first_token_seconds = 0;  // receipt → first token
  double total_seconds = 0;                // receipt → last token
};

// One message of a generation stream.
struct GenerationEvent {
  std::vector<int32_t> token_ids;  // the new tokens of this event
  std::vector<float> logprobs;     // one per token when the request asked for them
  std::string text;                // whole UTF-8 characters only
  FinishReason finish = FinishReason::kNone;
  absl::Status status;  // not OK: the stream ends with this error (nothing else is set)
  // The last event of a finished stream only:
  uint64_t seed = 0;
  GenerationUsage usage;

  bool last() const { return finish != FinishReason::kNone || !status.ok(); }
};

// Where a stream's events go (an RPC reactor, an HTTP handler). Must stay valid until it has
// received the last event.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Called on a worker thread, one call at a time, in order; must not block for long.
  virtual void OnEvent(GenerationEvent event) = 0;
  // Events handed over and not yet taken by the client (read by the worker before every step).
  virtual int64_t unsent() const = 0;
};

struct GenerationOptions {
  int workers = 1;             // generation worker threads, each with its own Decoder
  int threads_per_worker = 1;  // OpenMP threads per Decoder
  int64_t workspace_budget_bytes = int64_t{256} << 20;  // a Decoder's forward workspace bound
  int64_t max_active = 64;             // sequences per worker (running or in their prompt pass)
  int64_t max_prefill_tokens = 65536;  // prompt tokens of one prompt pass (one prompt may exceed it)
  int64_t max_waiting = 1024;          // admitted sequences not yet started
  int64_t max_unsent = 16;             // per stream: events not yet taken before its sequence pauses
  absl::Duration stalled_timeout = absl::Seconds(60);  // paused this long: cancelled
  absl::Duration priority_aging = absl::Seconds(10);
  GenerateLimits limits;
  // INVALID_ARGUMENT naming the flag for values that make no sense.
  absl::Status Validate() const;
};

// Generation events for metrics (server/metrics). Thread-safe and cheap, called from workers.
class GenerationObserver {
 public:
  virtual ~GenerationObserver() = default;
  virtual void OnTimeToFirstToken(double /*seconds*/) {}
  // The time between a sequence's consecutive tokens (one per token after the first).
  virtual void OnTokenInterval(double /*seconds*/) {}
  virtual void OnGeneratedTokens(int64_t /*tokens*/) {}
  // Running + in-prompt-pass sequences over all workers; bytes of decoding caches held.
  virtual void OnActiveSequences(int64_t /*sequences*/) {}
  virtual void OnCacheBytes(size_t /*bytes*/) {}
  virtual void OnGenerationRejected(const std::string& /*reason*/) {}
};


class GenerationService {
 public:
  // Starts the workers, each creating its Decoder on its own thread, on the process-wide `budget`
  // (each reserves its step buffers there for its life). FAILED_PRECONDITION when this CPU cannot
  // run the decoder (the server then runs without generation); INVALID_ARGUMENT when a worker's step
  // buffers do not fit the budget (--memory_budget_bytes, --generate_max_active). `clock` and `observer` (may be null)
  // are borrowed and must outlive the service.
  static absl::StatusOr<std::unique_ptr<GenerationService>> Create(
      std::shared_ptr<const ReformerModel> model, const GenerationOptions& options,
      std::shared_ptr<MemoryBudget> budget, const Clock* clock, GenerationObserver* observer);
  virtual ~GenerationService() = default;  // Shutdown() if not done yet

  // See the class comment. `sink` is borrowed until its last event.
  virtual absl::Status Submit(std::unique_ptr<GenerateRequest> request, GenerationSink* sink) = 0;
  // A sink's unsent count went down: paused sequences may go on.
  virtual void Wake() = 0;

  // New Submit → UNAVAILABLE; waiting and running sequences go on.
  virtual void StartDraining() = 0;
  // Waits until no sequence waits or runs, or `timeout` passes; true if idle.
  virtual bool WaitIdle(absl::Duration timeout) = 0;
  // Ends every waiting and running sequence (last event UNAVAILABLE) and joins the workers.
  virtual void Shutdown() = 0;

  virtual const GenerationOptions& options() const = 0;
  // Sequences admitted and not yet ended (waiting, running or in their prompt pass).
  virtual int64_t inflight() const = 0;
};

}  // namespace reformer::serving
