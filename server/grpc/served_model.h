// What the RPC layer needs to know about the served model, and the request limits it enforces.
// Built in main from the loaded ReformerModel (tests build it by hand); borrowed by the services.
#pragma once

#include <cstdint>
#include <string>

#include "engine/model/config.h"

namespace reformer {
class Tokenizer;
}

namespace reformer::serving {

class InferenceService;
class HealthState;
class ServerMetrics;
class Clock;

struct ServedModel {
  std::string name = "default";
  std::string version = "1";
  std::string platform = "reformer_onednn";
  ReformerConfig config;
  const Tokenizer* tokenizer = nullptr;  // borrowed; nullptr = token ids only
  std::string tokenizer_name;
  std::string rotations_source;
  int64_t max_batch_size = 0;  // documents per engine batch (ModelConfig)

  int64_t context() const { return config.max_position_embeddings; }
  int64_t embedding_size() const { return 2 * config.hidden_size; }
};

struct ServiceLimits {
  int64_t max_tokens_per_request = 0;  // sum over a request's documents; > 0
  int64_t max_response_bytes = int64_t{1} << 30;
};

// Everything a service borrows; all pointers outlive the gRPC server.
struct ServiceEnv {
  InferenceService* inference = nullptr;
  const ServedModel* model = nullptr;
  const HealthState* health = nullptr;
  ServerMetrics* metrics = nullptr;  // may be nullptr (tests)
  const Clock* clock = nullptr;
  ServiceLimits limits;
};

}  // namespace reformer::serving
