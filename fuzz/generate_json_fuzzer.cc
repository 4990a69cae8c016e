// Fuzz target: the body of Triton's generate extension as POST /v2/models/{name}/generate and
// generate_stream receive it — DecodeGenerateJson (server/http/generate_json.h: a SAX read of the
// JSON, text_input tokenized with the model's byte-level tokenizer) into the request layer's
// GenerateRequest (server/request/generate_request.h), then the one check, Validate(const
// GenerateRequest&, config, limits) (server/request/validate.h), that GenerationService::Submit runs.
// The model is the other server targets' (fuzz/grpc_fuzz_env.h): causal, 64-token context,
// vocabulary 258. The stream itself (GenerationService, the handler's writes) is not driven here.
//
// Input: 1 selector byte, then the body. Selector bit 0: the model has no tokenizer (text_input is
// then refused, input_ids accepted).
// Checks: a refusal is INVALID_ARGUMENT with a message; an accepted body is a JSON object (nlohmann's
// DOM parser agrees) whose prompt is its input_ids as sent or its text_input's bytes + 2; after
// Validate: ids in [0, vocab), max_new_tokens >= 1 with prompt + max_new_tokens within the context,
// temperature finite and >= 0, top_k >= 0, top_p in [0, 1], at most 16 stop strings, each non-empty
// and at most 256 bytes, priority in [0, 2^30].
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "fuzz/fuzz_files.h"
#include "nlohmann/json.hpp"
#include "server/http/generate_json.h"
#include "server/request/generate_request.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

// The served model of the other server targets: 64-token context, byte-level vocabulary.
struct GenerateFuzzEnv {
  GenerateFuzzEnv() : dir("generate_json_env") {
    auto parsed = reformer::ReformerConfig::FromJson(
        R"({"attn_layers": ["local", "lsh"], "hidden_size": 4, "num_attention_heads": 1,
            "attention_head_size": 4, "feed_forward_size": 8, "vocab_size": 258,
            "is_decoder": true, "axial_pos_embds": false, "max_position_embeddings": 64,
            "lsh_attn_chunk_length": 8, "local_attn_chunk_length": 8, "num_buckets": 4})",
        "fuzz/generate_json_env.json");
    Check(parsed.ok(), "the fuzz model config parses");
    model.config = *parsed;
    auto bytes = reformer::Tokenizer::ForModelDir(dir.path(), model.config);
    Check(bytes.ok() && *bytes != nullptr, "byte tokenizer");
    tokenizer = std::move(*bytes);
    model.tokenizer = tokenizer.get();
    ids_only = model;
    ids_only.tokenizer = nullptr;
  }

  reformer::fuzz::ScratchDir dir;
  std::unique_ptr<reformer::Tokenizer> tokenizer;
  reformer::serving::ServedModel model, ids_only;
};

// What the body said about the prompt, from nlohmann's DOM (the body parsed a second way).
void CheckPrompt(const nlohmann::json& body, const reformer::serving::GenerateRequest& r) {
  Check(body.is_object(), "an accepted body is a JSON object");
  Check(body.contains("text_input") != body.contains("input_ids"), "text_input or input_ids, not both");
  if (body.contains("input_ids")) {
    const nlohmann::json& ids = body["input_ids"];
    Check(ids.is_array() && ids.size() == r.prompt.size() && !r.text_input, "input_ids taken as sent");
    for (size_t i = 0; i < ids.size(); ++i) Check(ids[i] == r.prompt[i], "input_ids taken as sent");
    return;
  }
  const std::string text = body["text_input"].get<std::string>();
  Check(r.text_input && text.size() == r.prompt.size(), "text_input: one byte token per byte");
  for (size_t i = 0; i < text.size(); ++i) {
    Check(r.prompt[i] == static_cast<unsigned char>(text[i]) + 2, "text_input: byte + 2");
  }
}

void CheckValid(const reformer::serving::GenerateRequest& r, const reformer::ReformerConfig& config,
                const reformer::serving::GenerateLimits& limits) {
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  Check(prompt > 0, "a non-empty prompt");
  for (int32_t id : r.prompt) Check(id >= 0 && id < config.vocab_size, "prompt ids in [0, vocab)");
  Check(r.max_new_tokens >= 1, "max_new_tokens >= 1");
  Check(prompt + r.max_new_tokens <= config.max_position_embeddings, "prompt + max_new_tokens within the context");
  Check(std::isfinite(r.temperature) && r.temperature >= 0, "temperature finite, >= 0");
  Check(r.top_k >= 0, "top_k >= 0");
  Check(r.top_p >= 0 && r.top_p <= 1, "top_p in [0, 1]");
  Check(static_cast<int64_t>(r.stop.size()) <= limits.max_stop_strings, "stop strings within the limit");
  for (const std::string& s : r.stop) {
    Check(!s.empty() && static_cast<int64_t>(s.size()) <= limits.max_stop_bytes, "stop strings bounded, non-empty");
  }
  Check(r.priority >= 0 && r.priority <= (1 << 30), "priority clamped");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static GenerateFuzzEnv env;
  if (size < 1) return 0;
  const bool ids_only = (data[0] & 1) != 0;
  const absl::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const reformer::serving::ServedModel& model = ids_only ? env.ids_only : env.model;
  const reformer::serving::GenerateLimits limits;
  absl::StatusOr<reformer::serving::DecodedGenerateJson> decoded =
      reformer::serving::DecodeGenerateJson(body, model, limits);
  absl::Status status = decoded.status();
  if (decoded.ok()) status = reformer::serving::Validate(*decoded->request, model.config, limits);
  if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) {  // to check what seeds reach
    std::fprintf(stderr, "  %s\n", status.ToString().c_str());
  }
  if (!status.ok()) {
    Check(absl::IsInvalidArgument(status), "a refusal is INVALID_ARGUMENT (the model is causal)");
    Check(!status.message().empty(), "a refusal says why");
    return 0;
  }
  Check(!(ids_only && decoded->request->text_input), "no text prompt without a tokenizer");
  const nlohmann::json dom = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  Check(!dom.is_discarded(), "an accepted body is valid JSON");
  CheckPrompt(dom, *decoded->request);
  CheckValid(*decoded->request, model.config, limits);
  return 0;
}
