// Fuzz target: reformer.v1 Generate's request as the gRPC service receives it — the wire bytes of a
// reformer.v1.GenerateRequest, parsed, decoded by DecodeGenerate (server/grpc/generate_reactor.h:
// text prompts tokenized with the model's byte-level tokenizer) into the request layer's
// GenerateRequest (server/request/generate_request.h), and the one check, Validate(const
// GenerateRequest&, config, limits) (server/request/validate.h), that GenerationService::Submit runs
// before admission. The model is the gRPC targets' (grpc_fuzz_env.h): causal, 64-token context,
// vocabulary 258. The stream itself (GenerationService, the reactor's writes) is not driven here.
// Checks: a refusal is INVALID_ARGUMENT with a message (FAILED_PRECONDITION only for a non-causal
// model, which this one is not); an accepted request keeps what the wire said (ids prompt as sent,
// sampling fields, stop strings, priority clamped to [0, 2^30]) and respects Validate's rules: a
// prompt of ids in [0, vocab), max_new_tokens >= 1 with prompt + max_new_tokens within the context,
// temperature finite and >= 0, top_k >= 0, top_p in [0, 1] (0 = unset becomes 1 in ToParams), at
// most 16 stop strings, each non-empty and at most 256 bytes.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "fuzz/grpc_fuzz_env.h"
#include "proto/reformer.pb.h"
#include "server/grpc/generate_reactor.h"
#include "server/request/generate_request.h"
#include "server/request/validate.h"

namespace {

namespace v1 = ::reformer::v1;
using reformer::fuzz::Check;

void CheckAccepted(const v1::GenerateRequest& wire, const reformer::serving::GenerateRequest& r,
                   const reformer::ReformerConfig& config, const reformer::serving::GenerateLimits& limits) {
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  Check(prompt > 0, "a non-empty prompt");
  for (int32_t id : r.prompt) Check(id >= 0 && id < config.vocab_size, "prompt ids in [0, vocab)");
  if (wire.prompt().has_ids()) {
    Check(wire.prompt().ids().ids_size() == prompt, "an ids prompt is taken as sent");
    Check(!r.text_input, "an ids prompt is not text");
  } else {
    Check(r.text_input, "a text prompt is marked as text");
  }
  Check(r.max_new_tokens == wire.max_new_tokens() && r.max_new_tokens >= 1, "max_new_tokens >= 1, as sent");
  Check(prompt + r.max_new_tokens <= config.max_position_embeddings, "prompt + max_new_tokens within the context");
  Check(std::isfinite(r.temperature) && r.temperature >= 0 && r.temperature == wire.temperature(),
        "temperature finite, >= 0, as sent");
  Check(r.top_k >= 0 && r.top_k == wire.top_k(), "top_k >= 0, as sent");
  Check(r.top_p >= 0 && r.top_p <= 1 && r.top_p == wire.top_p(), "top_p in [0, 1], as sent");
  Check(static_cast<int64_t>(r.stop.size()) <= limits.max_stop_strings &&
            static_cast<int>(r.stop.size()) == wire.stop_size(), "stop strings within the limit, as sent");
  for (const std::string& s : r.stop) {
    Check(!s.empty() && static_cast<int64_t>(s.size()) <= limits.max_stop_bytes, "stop strings bounded, non-empty");
  }
  Check(r.priority >= 0 && r.priority <= (1 << 30), "priority clamped");
  Check(r.seed == wire.seed(), "the seed as sent (0 = the server picks)");
  const reformer::GenerationParams params = r.ToParams();
  Check(params.max_new_tokens == r.max_new_tokens, "ToParams keeps max_new_tokens");
  Check(params.sampling.top_p == (r.top_p == 0.f ? 1.f : r.top_p), "top_p 0 = unset = 1");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static reformer::fuzz::GrpcFuzzEnv env;
  v1::GenerateRequest wire;
  if (!wire.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<std::unique_ptr<reformer::serving::GenerateRequest>> decoded =
      reformer::serving::DecodeGenerate(wire, env.model);
  absl::Status status = decoded.status();
  const reformer::serving::GenerateLimits limits;
  if (decoded.ok()) status = reformer::serving::Validate(**decoded, env.model.config, limits);
  if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) {  // to check what seeds reach
    std::fprintf(stderr, "  %s\n", status.ToString().c_str());
  }
  if (!status.ok()) {
    Check(absl::IsInvalidArgument(status), "a refusal is INVALID_ARGUMENT (the model is causal)");
    Check(!status.message().empty(), "a refusal says why");
    return 0;
  }
  CheckAccepted(wire, **decoded, env.model.config, limits);
  return 0;
}
