// The read-only KServe v2 / Triton REST documents, as JSON, from the same structures the gRPC
// services read (server/request/model_info.h, the model signature, the metrics snapshot):
//   GET /v2                         server metadata
//   GET /v2/models/{name}           model metadata (with the same `properties` as ModelMetadata)
//   GET /v2/models/{name}/config    Triton's model configuration (ModelConfig's JSON field names)
//   GET /v2/models[/{name}]/stats   Triton's model statistics (ModelStatistics' fields)
#pragma once

#include <string>

#include "server/metrics/server_metrics.h"
#include "server/request/served_model.h"

namespace reformer::serving {

std::string ServerMetadataJson();
std::string ModelMetadataJson(const ServedModel& model, const ServiceLimits& limits);
std::string ModelConfigJson(const ServedModel& model);
std::string ModelStatsJson(const ServedModel& model, const ModelStatsSnapshot& stats);

}  // namespace reformer::serving
