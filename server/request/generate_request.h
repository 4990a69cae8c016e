// GenerateRequest: one generation request, whatever wire it came from (gRPC Generate, HTTP
// generate / generate_stream), from decoding until its stream ends. Its one check is
// Validate(const GenerateRequest&, ...) in validate.h, run by GenerationService::Submit right
// before admission; decoders only turn the wire into these fields (text is tokenized there).
//
// Wire conventions resolved here, once for every adapter: top_p 0 means "unset" (1, off) because
// proto3 reads an unset float as 0 (docs/generation.md §5); seed 0 means "the server picks one"
// (PickSeed), and the seed used is returned at the end.
//
// Ownership: one owner at a time (unique_ptr): the adapter, then the GenerationService.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/model/generation.h"

namespace reformer::serving {

struct GenerateRequest {
  std::string id;               // the client's request id, if its wire has one (never a metric label)
  std::vector<int32_t> prompt;  // token ids (text already tokenized)
  bool text_input = false;      // the prompt came as text
  int64_t max_new_tokens = 0;
  float temperature = 0.f;
  int32_t top_k = 0;
  float top_p = 0.f;   // 0 = unset (1)
  uint64_t seed = 0;   // 0 = the server picks one
  std::vector<std::string> stop;
  DecodeMode mode = DecodeMode::kCached;
  bool ignore_eos = false;
  bool return_logprobs = false;
  int priority = 0;  // 0 = default; 1 = highest, larger = lower priority
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  std::string method;  // for metric labels, e.g. "Generate"

  // The engine's parameters (top_p 0 → 1; the seed as it is: resolve it first with PickSeed).
  GenerationParams ToParams() const;
};

// A non-zero seed for a request that gave none (64 random bits).
uint64_t PickSeed();

}  // namespace reformer::serving
