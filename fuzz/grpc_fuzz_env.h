// What the gRPC-service fuzz targets share: a served model (a small causal config and the engine's
// byte-level tokenizer), a synchronous fake InferenceService and a stand-in for gRPC's call object,
// so a handler of server/grpc runs exactly as under gRPC's callback API — handler, Finish exactly
// once, OnDone — without a server or a network.
//
// The handlers decode the wire message into the request object (server/request/, decoders in
// server/grpc/infer_decode.h and reformer_service.cc); the fake service then does what
// InferenceServiceImpl does with it (docs/request-path.md): the one Validate(), AllocateOutputs(),
// and the engine's part — every element of every View(d) written once, with kWritten (row 0 of
// token_logprobs: 0, as the engine writes it). A target can therefore check the response layout
// against what the engine wrote: written cells = what the documents imply, every other cell 0.
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
#include "server/health/health_state.h"
#include "server/inference/inference_service.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace reformer::fuzz {

inline void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

// The value the fake engine writes into every element it is asked for.
inline constexpr float kWritten = 0.25f;

// What the fake service saw of the last request it accepted (targets are single-threaded).
struct AcceptedRequest {
  int64_t documents = 0;
  int64_t tokens = 0;
};

// Validate, allocate, write every view, answer inline.
class SyncFakeInference final : public serving::InferenceService {
 public:
  explicit SyncFakeInference(const serving::RequestLimits& limits) : limits_(limits) {}

  absl::Status Submit(std::unique_ptr<serving::InferenceRequest> request,
                      serving::DoneCallback done) override {
    if (absl::Status s = serving::Validate(*request, limits_); !s.ok()) return s;
    serving::InferenceRequest& r = *request;
    serving::InferenceResult result;
    result.status = r.AllocateOutputs();
    last_ = {r.documents.size(), r.documents.total_tokens()};
    for (int64_t d = 0; result.status.ok() && d < r.documents.size(); ++d) {
      absl::Span<const int32_t> doc = r.documents[d];
      Check(!doc.empty(), "no empty document passes Validate");
      for (int32_t id : doc) Check(id >= 0 && id < limits_.vocab_size, "Validate checks token ids");
      WriteView(static_cast<int64_t>(doc.size()), r.engine_outputs(), r.dims, r.View(d));
    }
    result.tokens = r.documents.total_tokens();
    result.request = std::move(request);
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

  // The last accepted request; cleared before each input.
  const AcceptedRequest& last() const { return last_; }
  void ClearLast() { last_ = {}; }

 private:
  // As the engine: each requested view's every element exactly once (OutputView, engine_api.h).
  static void WriteView(int64_t n, uint32_t outputs, const serving::ModelDims& dims, const OutputView& v) {
    auto fill = [](float* p, int64_t count) {
      for (int64_t i = 0; i < count; ++i) p[i] = kWritten;
    };
    if (outputs & kOutputLogits) fill(v.logits, n * dims.vocab);
    if (outputs & kOutputHiddenStates) fill(v.hidden_states, n * dims.embedding);
    if (outputs & kOutputTokenLogprobs) {
      v.token_logprobs[0] = 0.0f;
      fill(v.token_logprobs + 1, n - 1);
    }
    if (outputs & kOutputEmbedding) fill(v.embedding, dims.embedding);
  }

  const serving::RequestLimits limits_;
  const serving::InferenceOptions options_;
  AcceptedRequest last_;
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
    env.limits.max_tokens_per_request = 256;
    env.limits.max_response_bytes = int64_t{4} << 20;
    inference = std::make_unique<SyncFakeInference>(serving::LimitsOf(model, env.limits));
    health.SetReady();
    env.inference = inference.get();
    env.model = &model;
    env.health = &health;
    env.metrics = nullptr;
    env.clock = &clock;
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
