#include "server/request/generate_request.h"

#include "absl/random/random.h"

namespace reformer::serving {

GenerationParams GenerateRequest::ToParams() const {
  GenerationParams p;
  p.max_new_tokens = max_new_tokens;
  p.sampling.temperature = temperature;
  p.sampling.top_k = top_k;
  p.sampling.top_p = top_p == 0.f ? 1.f : top_p;
  p.sampling.seed = seed;
  p.stop = stop;
  p.ignore_eos = ignore_eos;
  p.mode = mode;
  return p;
}

uint64_t PickSeed() {
  absl::BitGen gen;
  return absl::Uniform<uint64_t>(absl::IntervalClosed, gen, 1, UINT64_MAX);
}

}  // namespace reformer::serving
