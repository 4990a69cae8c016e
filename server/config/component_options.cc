#include "server/config/component_options.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace reformer::serving {

InferenceOptions ToInferenceOptions(const ServerConfig& c) {
  InferenceOptions o;
  o.workers = c.workers.workers;
  o.threads_per_worker = c.workers.threads_per_worker;
  o.workspace_budget_bytes = c.workers.workspace_budget_bytes;
  o.max_batch_tokens = c.batching.max_batch_tokens;
  o.max_batch_size = c.batching.max_batch_size;
  o.long_batch_tokens = c.batching.long_batch_tokens;
  o.batch_fill_tokens = c.batching.batch_fill_tokens;
  o.length_ratio = c.batching.batch_length_ratio;
  o.memory_budget_bytes = c.batching.memory_budget_bytes;
  o.max_queue_delay = absl::Milliseconds(c.batching.max_queue_delay_ms);
  o.max_queue_requests = c.batching.max_queue_requests;
  o.max_queue_tokens = c.batching.max_queue_tokens;
  o.priority_aging = absl::Seconds(c.batching.priority_aging_s);
  o.max_tokens_per_request = c.limits.max_tokens_per_request;
  o.max_response_bytes = c.limits.max_response_bytes;
  return o;
}

GenerationOptions ToGenerationOptions(const ServerConfig& c) {
  GenerationOptions o;
  o.workers = c.generate.workers;
  o.threads_per_worker = c.generate.threads_per_worker;
  o.workspace_budget_bytes = c.workers.workspace_budget_bytes;
  o.max_active = c.generate.max_active;
  o.max_prefill_tokens = c.generate.max_prefill_tokens;
  o.max_waiting = c.generate.max_waiting;
  o.max_unsent = c.generate.max_unsent;
  o.stalled_timeout = absl::Seconds(c.generate.stalled_timeout_s);
  o.priority_aging = absl::Seconds(c.batching.priority_aging_s);
  return o;
}

GrpcServerOptions ToGrpcServerOptions(const ServerConfig& c) {
  GrpcServerOptions o;
  o.address = absl::StrCat(c.listen.bind_address, ":", c.listen.grpc_port);
  o.max_receive_message_bytes = c.grpc.max_receive_message_bytes;
  o.max_send_message_bytes = c.grpc.max_send_message_bytes;
  o.keepalive_time = absl::Seconds(c.grpc.keepalive_time_s);
  o.keepalive_timeout = absl::Seconds(c.grpc.keepalive_timeout_s);
  o.min_client_ping_interval = absl::Seconds(c.grpc.min_client_ping_interval_s);
  o.max_connection_age = absl::Seconds(c.grpc.max_connection_age_s);
  o.max_connection_age_grace = absl::Seconds(c.grpc.max_connection_age_grace_s);
  o.max_connection_idle = absl::Seconds(c.grpc.max_connection_idle_s);
  o.resource_quota_bytes = c.grpc.resource_quota_bytes;
  o.resource_quota_threads = c.grpc.resource_quota_threads;
  o.max_concurrent_streams = c.grpc.max_concurrent_streams;
  o.stream.max_unsent_responses = c.grpc.stream_max_unsent_responses;
  o.stream.max_unsent_bytes = c.grpc.stream_max_unsent_bytes;
  o.stream.stalled_timeout = absl::Seconds(c.grpc.stream_stalled_timeout_s);
  return o;
}

HttpOptions ToHttpOptions(const ServerConfig& c) {
  HttpOptions o;
  o.port = c.listen.http_port;
  o.bind_address = c.listen.bind_address == "0.0.0.0" ? "" : c.listen.bind_address;
  o.num_threads = c.http.threads;
  o.api = HttpApiEnabled(c);
  o.request_timeout = absl::Seconds(c.http.request_timeout_s);
  o.keep_alive_timeout = absl::Seconds(c.http.keep_alive_timeout_s);
  o.infer_threads = c.http.infer_threads;
  o.max_connections = c.http.max_connections;
  o.max_connections_per_client = c.http.max_connections_per_client;
  o.max_head_bytes = c.http.max_head_bytes;
  o.rest.max_body_bytes = c.http.max_body_bytes;
  o.rest.body_timeout = absl::Seconds(c.http.body_timeout_s);
  return o;
}

ServiceLimits ToServiceLimits(const ServerConfig& c) {
  ServiceLimits o;
  o.max_tokens_per_request = c.limits.max_tokens_per_request;
  o.max_response_bytes = c.limits.max_response_bytes;
  o.max_generate_streams_per_connection = c.generate.max_streams_per_connection;
  return o;
}

MetricsOptions ToMetricsOptions(const ServerConfig& c, const ServedModel& served, const std::string& version) {
  MetricsOptions o;
  o.version = version;
  o.model_name = served.name;
  o.max_document_tokens = served.context();
  o.max_request_tokens = c.limits.max_tokens_per_request;
  o.max_batch_tokens = c.batching.max_batch_tokens;
  o.max_batch_size = c.batching.max_batch_size;
  return o;
}

}  // namespace reformer::serving
