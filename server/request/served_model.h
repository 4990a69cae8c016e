// What the adapters (gRPC, HTTP) and the request layer know about the served model, the request
// limits the service enforces, and the bundle of borrowed objects every adapter works with.
// Built in main from the loaded ReformerModel (tests build them by hand). No gRPC, no protobuf.
#pragma once

#include <cstdint>
#include <string>

#include "engine/model/config.h"

namespace reformer {
class Tokenizer;
}

namespace reformer::serving {

class InferenceService;
class GenerationService;
class HealthState;
class ServerMetrics;
class Clock;
class TokenStore;

// Sizes of a model's outputs, all a request needs to lay out its response.
struct ModelDims {
  int64_t vocab = 0;         // V: logits per token
  int64_t embedding = 0;     // 2H: hidden_states per token, embedding per document
  int64_t pad_token_id = 0;  // token_ids of padding positions
};

struct ServedModel {
  std::string name = "default";
  std::string version = "1";
  std::string platform = "reformer_onednn";
  ReformerConfig config;
  const Tokenizer* tokenizer = nullptr;  // borrowed; nullptr = token ids only
  std::string tokenizer_name;
  std::string rotations_source;
  std::string compute_type;    // the matmuls' compute type ("float32", "bfloat16", "int8")
  std::string isa;             // EngineIsaSummary(): the instruction sets the engine runs on
  int64_t max_batch_size = 0;  // documents per engine batch (ModelConfig)

  int64_t context() const { return config.max_position_embeddings; }
  int64_t embedding_size() const { return 2 * config.hidden_size; }
  ModelDims dims() const { return {config.vocab_size, embedding_size(), config.pad_token_id}; }
};

// Shown to clients in metadata; the same values bound requests in InferenceService (its options).
struct ServiceLimits {
  int64_t max_tokens_per_request = 0;  // sum over a request's documents; > 0
  int64_t max_response_bytes = int64_t{1} << 30;
  // Most active Generate streams of one client connection (server/grpc/connection_streams.h).
  int64_t max_generate_streams_per_connection = 16;
};

// Everything an adapter borrows; all pointers outlive the servers.
struct ServiceEnv {
  InferenceService* inference = nullptr;
  GenerationService* generation = nullptr;  // nullptr: the server does not generate
  const char* generation_off = "it was started without generation";  // why, when `generation` is nullptr
  const ServedModel* model = nullptr;
  const HealthState* health = nullptr;
  ServerMetrics* metrics = nullptr;  // may be nullptr (tests)
  const Clock* clock = nullptr;
  ServiceLimits limits;
  // Bearer tokens every call but health/liveness/readiness must present (server/grpc/auth.h,
  // server/http); nullptr = authentication off.
  const TokenStore* tokens = nullptr;
};

}  // namespace reformer::serving
