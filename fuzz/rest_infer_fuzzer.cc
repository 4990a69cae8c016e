// Fuzz target: the KServe v2 REST inference body as POST /v2/models/{name}/infer receives it —
// DecodeRestInfer (server/http/rest_infer_decode.h: the streamed JSON of infer_json.h and the
// binary tensor data extension) into the request object, the one Validate(), the response buffers
// (server/request/), the engine's part done as fuzz/grpc_fuzz_env.h does it (every element of every
// View(d) written once with kWritten), and WriteInferResponseJson into a byte sink.
//
// Input: 1 selector byte, then the body. Selector bit 0: an Inference-Header-Content-Length header
// is sent, its value the bytes up to the first '\n' after the selector (the body follows the '\n');
// bit 1: the path names version "1"; bit 2: the path names another model (NOT_FOUND expected).
//
// Checks: a refusal is a client error (INVALID_ARGUMENT, NOT_FOUND; RESOURCE_EXHAUSTED from
// Validate) with a message; an accepted request has one binary choice per output, a header length
// within the body, and after Validate: every document non-empty and within the context, ids in
// [0, vocab), tokens within max_tokens_per_request, response bytes within max_response_bytes; every
// buffer is exactly shape x element size; the response JSON (counted and written: the two lengths
// agree) parses, carries the outputs in order with data of shape-product elements (or
// binary_data_size = the buffer's bytes), and in every FP32 output exactly the engine's cells are
// kWritten while all others are 0.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "fuzz/fuzz_files.h"
#include "nlohmann/json.hpp"
#include "server/http/json_writer.h"
#include "server/http/rest_infer_decode.h"
#include "server/http/rest_infer_encode.h"
#include "server/inference/inference_service.h"
#include "server/request/model_signature.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace {

constexpr float kWritten = 0.25f;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

// The served model of the gRPC targets (grpc_fuzz_env.h): 64-token context, byte-level vocabulary.
struct RestFuzzEnv {
  RestFuzzEnv() : dir("rest_env") {
    auto parsed = reformer::ReformerConfig::FromJson(
        R"({"attn_layers": ["local", "lsh"], "hidden_size": 4, "num_attention_heads": 1,
            "attention_head_size": 4, "feed_forward_size": 8, "vocab_size": 258,
            "is_decoder": true, "axial_pos_embds": false, "max_position_embeddings": 64,
            "lsh_attn_chunk_length": 8, "local_attn_chunk_length": 8, "num_buckets": 4})",
        "fuzz/rest_env.json");
    Check(parsed.ok(), "the fuzz model config parses");
    model.config = *parsed;
    auto bytes = reformer::Tokenizer::ForModelDir(dir.path(), model.config);
    Check(bytes.ok() && *bytes != nullptr, "byte tokenizer");
    tokenizer = std::move(*bytes);
    model.tokenizer = tokenizer.get();
    model.tokenizer_name = tokenizer->Name();
    model.max_batch_size = 8;
    reformer::serving::ServiceLimits service;
    service.max_tokens_per_request = 256;
    service.max_response_bytes = int64_t{4} << 20;
    limits = reformer::serving::LimitsOf(model, service);
  }

  reformer::fuzz::ScratchDir dir;
  std::unique_ptr<reformer::Tokenizer> tokenizer;
  reformer::serving::ServedModel model;
  reformer::serving::RequestLimits limits;
};

void CheckRefusal(const absl::Status& s, bool validate) {
  if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) {  // to check what seeds reach
    std::fprintf(stderr, "  refused: %s\n", s.ToString().c_str());
  }
  const bool client = absl::IsInvalidArgument(s) || absl::IsNotFound(s) ||
                      (validate && absl::IsResourceExhausted(s));
  if (!client) std::fprintf(stderr, "status: %s\n", s.ToString().c_str());
  Check(client, "a refusal is a client error");
  Check(!s.message().empty(), "a refusal says why");
}

// Validate's promises, checked from the outside.
void CheckValid(const reformer::serving::InferenceRequest& r, const reformer::serving::RequestLimits& limits) {
  Check(r.documents.size() > 0, "at least one document");
  Check(r.documents.total_tokens() <= limits.max_tokens_per_request, "tokens within the limit");
  for (int64_t d = 0; d < r.documents.size(); ++d) {
    Check(r.documents.length(d) > 0 && r.documents.length(d) <= limits.context, "document within context");
    for (int32_t id : r.documents[d]) Check(id >= 0 && id < limits.vocab_size, "token ids in [0, vocab)");
  }
  Check(!r.outputs.empty(), "at least one output");
  Check(r.ResponseBytes() <= limits.max_response_bytes, "response within max_response_bytes");
}

// As the engine: each requested view's every element exactly once (OutputView, engine_api.h).
void WriteViews(reformer::serving::InferenceRequest& r) {
  const uint32_t outputs = r.engine_outputs();
  auto fill = [](float* p, int64_t count) {
    for (int64_t i = 0; i < count; ++i) p[i] = kWritten;
  };
  for (int64_t d = 0; d < r.documents.size(); ++d) {
    const int64_t n = r.documents.length(d);
    const reformer::OutputView v = r.View(d);
    if (outputs & reformer::kOutputLogits) fill(v.logits, n * r.dims.vocab);
    if (outputs & reformer::kOutputHiddenStates) fill(v.hidden_states, n * r.dims.embedding);
    if (outputs & reformer::kOutputTokenLogprobs) {
      v.token_logprobs[0] = 0.0f;
      fill(v.token_logprobs + 1, n - 1);
    }
    if (outputs & reformer::kOutputEmbedding) fill(v.embedding, r.dims.embedding);
  }
}

// Cells the engine wrote into `kind`; -1 = not an engine output.
int64_t WrittenCells(reformer::serving::OutputKind kind, const reformer::serving::InferenceRequest& r) {
  using reformer::serving::OutputKind;
  const int64_t tokens = r.documents.total_tokens(), docs = r.documents.size();
  switch (kind) {
    case OutputKind::kLogits: return tokens * r.dims.vocab;
    case OutputKind::kHiddenStates: return tokens * r.dims.embedding;
    case OutputKind::kTokenLogprobs: return tokens - docs;
    case OutputKind::kEmbedding: return docs * r.dims.embedding;
    default: return -1;
  }
}

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void CheckOutput(const nlohmann::json& out, size_t i, bool binary, reformer::serving::InferenceRequest& r) {
  const reformer::serving::OutputSpec& spec = reformer::serving::SpecOf(r.outputs[i]);
  Check(out.is_object() && out.value("name", "") == spec.name, "outputs in request order");
  const std::vector<int64_t> shape = r.OutputShape(spec.kind);
  Check(out.contains("shape") && out["shape"].get<std::vector<int64_t>>() == shape, "the output's shape");
  Check(shape.at(0) == r.documents.size(), "one row per document");
  const int64_t n = Product(shape);
  Check(static_cast<int64_t>(r.buffer(i).size()) == n * reformer::serving::DataTypeSize(spec.datatype),
        "buffer bytes = shape x element size");
  if (binary) {
    Check(out["parameters"]["binary_data_size"].get<int64_t>() == static_cast<int64_t>(r.buffer(i).size()),
          "binary_data_size = the buffer's bytes");
    return;
  }
  const nlohmann::json& data = out["data"];
  Check(data.is_array() && static_cast<int64_t>(data.size()) == n, "data has shape-product elements");
  const int64_t expected = WrittenCells(spec.kind, r);
  if (expected < 0) return;
  int64_t written = 0;
  for (const nlohmann::json& v : data) {
    const double x = v.get<double>();
    Check(x == kWritten || x == 0.0, "a cell is written by the engine or zero padding");
    written += x == kWritten;
  }
  Check(written == expected, "written cells = what the documents' tokens imply");
}

void CheckResponse(reformer::serving::InferenceResult& result, const reformer::serving::ServedModel& model,
                   const std::vector<bool>& binary) {
  reformer::serving::CountingSink counter;
  {
    reformer::serving::JsonWriter w(&counter);
    reformer::serving::WriteInferResponseJson(result, model, binary, &w);
    Check(w.Flush(), "counting never fails");
  }
  std::string text;
  reformer::serving::StringSink sink(&text);
  reformer::serving::JsonWriter w(&sink);
  reformer::serving::WriteInferResponseJson(result, model, binary, &w);
  Check(w.Flush(), "a string sink never fails");
  Check(static_cast<int64_t>(text.size()) == counter.bytes(), "counted length = written length");
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  Check(!json.is_discarded() && json.is_object(), "the response is a JSON object");
  const nlohmann::json& outputs = json["outputs"];
  reformer::serving::InferenceRequest& r = *result.request;
  Check(outputs.is_array() && outputs.size() == r.outputs.size(), "every output answered");
  for (size_t i = 0; i < r.outputs.size(); ++i) CheckOutput(outputs[i], i, binary[i], r);
}

// The sizes the client declared match what it sent: the header's JSON length lies within the
// body, and the inputs' binary_data_size add up to exactly the bytes after the JSON (read back
// with nlohmann's parser, independent of infer_json.h's).
void CheckDeclaredSizes(const std::optional<absl::string_view>& header, absl::string_view body) {
  size_t json_length = body.size();
  if (header) {
    uint64_t n = 0;
    Check(absl::SimpleAtoi(*header, &n) && n <= body.size(), "the JSON length lies within the body");
    json_length = static_cast<size_t>(n);
  }
  const nlohmann::json json = nlohmann::json::parse(body.substr(0, json_length), nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("inputs")) return;  // e.g. duplicate keys
  int64_t binary = 0;
  for (const nlohmann::json& in : json["inputs"]) {
    if (!in.is_object() || !in.contains("parameters")) continue;
    const nlohmann::json& p = in["parameters"];
    if (p.is_object() && p.contains("binary_data_size") && p["binary_data_size"].is_number_integer()) {
      binary += p["binary_data_size"].get<int64_t>();
    }
  }
  Check(binary == static_cast<int64_t>(body.size() - json_length), "binary sizes add up to the bytes after the JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static RestFuzzEnv env;
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::optional<absl::string_view> header;
  if (selector & 1) {
    const size_t nl = rest.find('\n');
    header = rest.substr(0, nl);
    rest = nl == rest.npos ? absl::string_view() : rest.substr(nl + 1);
  }
  const reformer::serving::RestInferInput input{(selector & 4) ? "other" : "default",
                                                (selector & 2) ? "1" : "", rest, header};
  auto decoded = reformer::serving::DecodeRestInfer(input, env.model, env.limits);
  if (!decoded.ok()) {
    CheckRefusal(decoded.status(), /*validate=*/false);
    return 0;
  }
  Check(!(selector & 4), "another model's name is refused");
  reformer::serving::InferenceRequest& r = *decoded->request;
  Check(decoded->binary.size() == r.outputs.size(), "one binary choice per output");
  Check(r.documents.total_tokens() <= env.limits.max_tokens_per_request, "decoding holds the token limit");
  CheckDeclaredSizes(header, rest);
  if (const absl::Status s = reformer::serving::Validate(r, env.limits); !s.ok()) {
    CheckRefusal(s, /*validate=*/true);
    return 0;
  }
  CheckValid(r, env.limits);
  Check(r.AllocateOutputs().ok(), "outputs within the limits are allocated");
  Check(r.num_buffers() == r.outputs.size(), "one buffer per output");
  WriteViews(r);
  reformer::serving::InferenceResult result;
  result.tokens = r.documents.total_tokens();
  result.request = std::move(decoded->request);
  CheckResponse(result, env.model, decoded->binary);
  if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) std::fprintf(stderr, "  answered\n");
  return 0;
}
