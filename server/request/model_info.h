// What the server tells clients about itself and its model, built once for every adapter: server
// metadata (name, version, extensions), the model metadata's properties and Triton's model
// configuration. gRPC (ServerMetadata, ModelMetadata, ModelConfig) and REST (GET /v2,
// /v2/models/{name}, /v2/models/{name}/config) render the same values, so the two APIs cannot
// drift apart. Tensors come from the signature (model_signature.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "server/request/model_signature.h"
#include "server/request/served_model.h"

namespace reformer::serving {

inline constexpr char kServerName[] = "reformer-server";
inline constexpr char kServerVersion[] = "0.1.0";

// The protocol extensions implemented (ServerMetadata `extensions`): Triton's names.
absl::Span<const char* const> ServerExtensions();

// ModelMetadata `properties`: context, request limits, vocabulary, causality, tokenizer, rotations.
std::vector<std::pair<std::string, std::string>> ModelProperties(const ServedModel& model,
                                                                 const ServiceLimits& limits);

// Triton's ModelConfig, without the wire.
struct ModelConfigInfo {
  struct Tensor {
    std::string name;
    DataType datatype;
    std::vector<int64_t> dims;  // without the batch dimension (ConfigDims)
    bool optional = false;      // inputs only
  };
  std::string name;
  std::string platform;
  std::string backend = "reformer";
  int32_t max_batch_size = 0;
  std::vector<Tensor> inputs;
  std::vector<Tensor> outputs;
};

ModelConfigInfo ConfigOf(const ServedModel& model);

// Triton's config datatype name: "TYPE_BOOL", "TYPE_INT32", "TYPE_INT64", "TYPE_FP32",
// "TYPE_STRING" (BYTES).
const char* ConfigTypeName(DataType type);

}  // namespace reformer::serving
