// InferenceRequest: the one request object, from decoding to the response (docs/request-path.md).
//
// A decoder (gRPC ModelInfer/ModelStreamInfer and reformer.v1 today; REST and Generate later) fills
// it: the documents' token ids (stored once, Documents), the requested outputs, the response
// layout, priority and deadline. Validate() (validate.h) is its one check, run by
// InferenceService::Submit right before the scheduler's admission. A worker calls AllocateOutputs()
// (once per request) and hands the engine View(d) for every document it runs: the engine writes
// straight into the response buffers, which the adapter finally turns into the response without
// copying them.
//
// Response layout. Per-token outputs with padded_length T > 0 are [B, T(, width)]: document d fills
// row d at positions [left(d), left(d) + n_d); the other positions are padding (zeroed; token_ids
// holds pad_token_id there). With T == 0 the documents' tokens lie back to back. Per-document
// outputs are [B(, width)]. Buffers are uninitialised except for padding.
//
// Ownership: one owner at a time (unique_ptr): the adapter, then the InferenceService, then the
// adapter again through InferenceResult. Thread safety: AllocateOutputs() may be called by several
// workers at once (a request's documents may run in different batches) and each worker writes only
// its documents' regions; everything else follows the single owner.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/model/engine_api.h"
#include "server/request/documents.h"
#include "server/request/model_signature.h"
#include "server/request/output_buffer.h"
#include "server/request/served_model.h"

namespace reformer::serving {

class InferenceRequest {
 public:
  InferenceRequest() = default;
  InferenceRequest(const InferenceRequest&) = delete;
  InferenceRequest& operator=(const InferenceRequest&) = delete;

  // --- Filled by the decoder
  // ----------------------------------------------------------------------
  std::string id;                   // the client's request id (echoed; never a metric label)
  Documents documents;              // real tokens only (padding removed)
  std::vector<OutputKind> outputs;  // in response order
  int64_t padded_length = 0;        // T of per-token outputs; 0 = documents back to back
  std::vector<int64_t> left;        // padded layout: first position of each document; empty = all 0
  ModelDims dims;                   // the served model's output sizes
  bool text_input = false;          // documents came from `text` (token_ids/lengths may be asked)
  const char* noun = "document";    // how messages name a document ("row", "text row", ...)
  int priority = 0;                 // 0 = default; 1 = highest, larger = lower priority
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  std::string method;     // for metric labels, e.g. "ModelInfer"
  bool internal = false;  // the server's own work (warm-up): not reported to the InferenceObserver

  // --- Derived
  // ------------------------------------------------------------------------------------
  // reformer::OutputFlags the engine must compute (0 when only token_ids/lengths are asked).
  uint32_t engine_outputs() const;
  int64_t left_of(int64_t d) const { return left.empty() ? 0 : left[d]; }
  // Position of document d's first token among the per-token rows of an output.
  int64_t TokenStart(int64_t d) const;
  // Shape and byte size of output `kind` (saturated at INT64_MAX: compare with a limit).
  std::vector<int64_t> OutputShape(OutputKind kind) const;
  int64_t OutputBytes(OutputKind kind) const;
  int64_t ResponseBytes() const;

  // --- Response buffers
  // --------------------------------------------------------------------------- Allocates one
  // buffer per output, once (later calls return the first result), zeroes padding and writes
  // token_ids/lengths. RESOURCE_EXHAUSTED when memory is short.
  absl::Status AllocateOutputs();
  // Where document d's engine outputs go (after AllocateOutputs): the engine's OutputView.
  OutputView View(int64_t d) const;
  // Output i's buffer (response order), after AllocateOutputs.
  OutputBuffer& buffer(size_t i) { return buffers_[i]; }
  size_t num_buffers() const { return buffers_.size(); }

 private:
  absl::Status DoAllocate();
  void ZeroPadding(OutputKind kind, char* dst) const;
  void WriteTokenIds(int64_t* dst) const;

  absl::once_flag allocate_once_;
  absl::Status allocate_status_;
  std::vector<OutputBuffer> buffers_;
};

}  // namespace reformer::serving
