// The resolved configuration tree (server_config.h) as the option structs of the server's
// components. Pure functions, no defaults of their own: with a default ServerConfig they give each
// component's own defaults (component_options_test checks it), so a default is never written twice
// with different values.
#pragma once

#include <string>

#include "server/config/server_config.h"
#include "server/grpc/grpc_server.h"
#include "server/http/http_server.h"
#include "server/inference/generation_service.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/served_model.h"

namespace reformer::serving {

InferenceOptions ToInferenceOptions(const ServerConfig& c);
GenerationOptions ToGenerationOptions(const ServerConfig& c);
GrpcServerOptions ToGrpcServerOptions(const ServerConfig& c);
HttpOptions ToHttpOptions(const ServerConfig& c);
ServiceLimits ToServiceLimits(const ServerConfig& c);
MetricsOptions ToMetricsOptions(const ServerConfig& c, const ServedModel& served, const std::string& version);

}  // namespace reformer::serving
