// What the gRPC-service fuzz targets share: a served model (a small causal config and the engine's
// byte-level tokenizer), a synchronous fake InferenceService that answers every accepted request
// with outputs of the right sizes, and a stand-in for gRPC's call object, so a handler of
// server/grpc runs exactly as under gRPC's callback API — handler, Finish exactly once, OnDone —
// without a server or a network.
// TODO(reqpath): when server/request/ lands, these targets drive its decoding/validation entry
// point directly (fuzz/README.md).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "fuzz/fuzz_files.h"
#include "grpcpp/grpcpp.h"
#include "server/batching/clock.h"
#include "server/grpc/served_model.h"
#include "server/health/health_state.h"
#include "server/inference/inference_service.h"

namespace reformer::fuzz {

inline void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

// Answers inline with outputs sized as the engine's (DocumentOutput per document, only what was asked).
class SyncFakeInference final : public serving::InferenceService {
 public:
  explicit SyncFakeInference(const ReformerConfig& config) : config_(config) {}

  absl::Status Submit(std::unique_ptr<serving::InferenceRequest> request,
                      serving::DoneCallback done) override {
    serving::InferenceResult result;
    const int64_t width = 2 * config_.hidden_size;
    for (const auto& doc : request->documents) {
      Check(!doc.empty(), "no empty document reaches the inference service");
      for (int32_t id : doc) Check(id >= 0 && id < config_.vocab_size, "token ids validated");
      DocumentOutput out;
      const size_t n = doc.size();
      out.num_tokens = static_cast<int64_t>(n);
      if (request->outputs & kOutputLogits) out.logits.assign(n * config_.vocab_size, 0.25f);
      if (request->outputs & kOutputHiddenStates) out.hidden_states.assign(n * width, 0.5f);
      if (request->outputs & kOutputTokenLogprobs) out.token_logprobs.assign(n, -0.75f);
      if (request->outputs & kOutputEmbedding) out.embedding.assign(width, 1.0f);
      result.tokens += out.num_tokens;
      result.outputs.push_back(std::move(out));
    }
    done(std::move(result));
    return absl::OkStatus();
  }
  void StartDraining() override {}
  bool WaitIdle(absl::Duration) override { return true; }
  void Shutdown() override {}
  const ReformerModel& model() const override { std::abort(); }
  const serving::InferenceOptions& options() const override { return options_; }
  int64_t queued_requests() const override { return 0; }
  int64_t queued_tokens() const override { return 0; }

 private:
  const ReformerConfig config_;
  const serving::InferenceOptions options_;
};

// gRPC's side of a unary call: takes the reactor's Finish, then calls OnDone as gRPC would.
class FakeUnaryCall final : public grpc::ServerCallbackUnary {
 public:
  // Binds `reactor` (replaying a Finish made before binding, as gRPC does), then completes the call.
  // Returns the status the handler finished with.
  grpc::Status Complete(grpc::ServerUnaryReactor* reactor) {
    reactor_ = reactor;
    BindReactor(reactor);
    Check(finishes_ == 1, "a unary handler finishes exactly once (synchronous fake engine)");
    reactor->OnDone();
    if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) {  // to check what seeds reach
      std::fprintf(stderr, "  status %d %s\n", static_cast<int>(status_.error_code()),
                   status_.error_message().c_str());
    }
    return status_;
  }
  void Finish(grpc::Status s) override {
    ++finishes_;
    status_ = std::move(s);
  }
  void SendInitialMetadata() override {}

 private:
  grpc::internal::ServerReactor* reactor() override { return reactor_; }
  void CallOnDone() override {}

  grpc::ServerUnaryReactor* reactor_ = nullptr;
  int finishes_ = 0;
  grpc::Status status_;
};

// Codes a handler may answer a client's request with; INTERNAL/UNKNOWN would mean a server bug.
inline bool ExpectedCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::FAILED_PRECONDITION:
      return true;
    default:
      return false;
  }
}

// The served model and the environment a service borrows; built once per process.
struct GrpcFuzzEnv {
  GrpcFuzzEnv() : dir("grpc_env") {
    auto parsed = ReformerConfig::FromJson(
        R"({"attn_layers": ["local", "lsh"], "hidden_size": 4, "num_attention_heads": 1,
            "attention_head_size": 4, "feed_forward_size": 8, "vocab_size": 258,
            "is_decoder": true, "axial_pos_embds": false, "max_position_embeddings": 64,
            "lsh_attn_chunk_length": 8, "local_attn_chunk_length": 8, "num_buckets": 4})",
        "fuzz/grpc_env.json");
    Check(parsed.ok(), "the fuzz model config parses");
    model.config = *parsed;
    auto bytes = Tokenizer::ForModelDir(dir.path(), model.config);  // vocab 258: byte-level
    Check(bytes.ok() && *bytes != nullptr, "byte tokenizer");
    tokenizer = std::move(*bytes);
    model.tokenizer = tokenizer.get();
    model.tokenizer_name = tokenizer->Name();
    model.max_batch_size = 8;
    inference = std::make_unique<SyncFakeInference>(model.config);
    health.SetReady();
    env.inference = inference.get();
    env.model = &model;
    env.health = &health;
    env.metrics = nullptr;
    env.clock = &clock;
    env.limits.max_tokens_per_request = 256;
    env.limits.max_response_bytes = int64_t{4} << 20;
  }

  ScratchDir dir;
  std::unique_ptr<Tokenizer> tokenizer;
  serving::ServedModel model;
  std::unique_ptr<SyncFakeInference> inference;
  serving::HealthState health;
  serving::RealClock clock;
  serving::ServiceEnv env;
};

}  // namespace reformer::fuzz
