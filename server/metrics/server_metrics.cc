#include "server/metrics/server_metrics.h"

#include <algorithm>
#include <cmath>

namespace reformer::serving {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

uint64_t ToNs(double seconds) {
  return seconds <= 0 ? 0 : static_cast<uint64_t>(std::llround(seconds * 1e9));
}

}  // namespace

const char* RejectReason(const absl::Status& status, bool draining) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return "invalid";
    case absl::StatusCode::kResourceExhausted:
      return "too_large";
    case absl::StatusCode::kUnavailable:
      return draining ? "draining" : nullptr;
    default:
      return nullptr;
  }
}

const char* GrpcCodeLabel(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "Canceled";
    case absl::StatusCode::kUnknown: return "Unknown";
    case absl::StatusCode::kInvalidArgument: return "InvalidArgument";
    case absl::StatusCode::kDeadlineExceeded: return "DeadlineExceeded";
    case absl::StatusCode::kNotFound: return "NotFound";
    case absl::StatusCode::kAlreadyExists: return "AlreadyExists";
    case absl::StatusCode::kPermissionDenied: return "PermissionDenied";
    case absl::StatusCode::kResourceExhausted: return "ResourceExhausted";
    case absl::StatusCode::kFailedPrecondition: return "FailedPrecondition";
    case absl::StatusCode::kAborted: return "Aborted";
    case absl::StatusCode::kOutOfRange: return "OutOfRange";
    case absl::StatusCode::kUnimplemented: return "Unimplemented";
    case absl::StatusCode::kInternal: return "Internal";
    case absl::StatusCode::kUnavailable: return "Unavailable";
    case absl::StatusCode::kDataLoss: return "DataLoss";
    case absl::StatusCode::kUnauthenticated: return "Unauthenticated";
    default: return "Unknown";
  }
}

std::vector<double> ServerMetrics::SecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   30,    60,   120,  300, 600};
}

std::vector<double> ServerMetrics::TokenIntervalBuckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10};
}

std::vector<double> ServerMetrics::PowerOfTwoBuckets(double first, double last) {
  std::vector<double> out;
  double b = std::max(1.0, first);
  for (; b < last; b *= 2) out.push_back(b);
  out.push_back(b);  // first power of two >= last: the top bucket covers the whole range
  return out;
}

ServerMetrics::ServerMetrics(prometheus::Registry* registry, const MetricsOptions& options)
    : requests_total_(BuildCounter()
                          .Name("reformer_requests_total")
                          .Help("Inference requests finished, by RPC method, gRPC status code and tenant "
                                "(the bearer token's name; 'anonymous' without one).")
                          .Register(*registry)),
      request_duration_(BuildHistogram()
                            .Name("reformer_request_duration_seconds")
                            .Help("End-to-end inference request latency (receipt to answer).")
                            .Register(*registry)),
      queue_duration_(BuildHistogram()
                          .Name("reformer_queue_duration_seconds")
                          .Help("Time a request waited in the scheduler queue.")
                          .Register(*registry)
                          .Add({}, SecondsBuckets())),
      compute_duration_(BuildHistogram()
                            .Name("reformer_compute_duration_seconds")
                            .Help("Engine compute time per request.")
                            .Register(*registry)
                            .Add({}, SecondsBuckets())),
      batch_size_(BuildHistogram()
                      .Name("reformer_batch_size")
                      .Help("Documents per engine batch.")
                      .Register(*registry)
                      .Add({}, PowerOfTwoBuckets(1, static_cast<double>(options.max_batch_size)))),
      batch_tokens_(BuildHistogram()
                        .Name("reformer_batch_tokens")
                        .Help("Real tokens per engine batch.")
                        .Register(*registry)
                        .Add({}, PowerOfTwoBuckets(64, static_cast<double>(options.max_batch_tokens)))),
      input_tokens_(BuildHistogram()
                        .Name("reformer_input_tokens")
                        .Help("Real tokens per inference request (sum over its documents).")
                        .Register(*registry)
                        .Add({}, PowerOfTwoBuckets(16, static_cast<double>(options.max_request_tokens)))),
      document_tokens_(BuildHistogram()
                           .Name("reformer_document_tokens")
                           .Help("Tokens per document (capped by the model's context).")
                           .Register(*registry)
                           .Add({}, PowerOfTwoBuckets(16, static_cast<double>(options.max_document_tokens)))),
      queue_requests_(BuildGauge()
                          .Name("reformer_queue_requests")
                          .Help("Requests waiting in the scheduler queue.")
                          .Register(*registry)
                          .Add({})),
      queue_tokens_(BuildGauge()
                        .Name("reformer_queue_tokens")
                        .Help("Tokens waiting in the scheduler queue (autoscaling signal).")
                        .Register(*registry)
                        .Add({})),
      inflight_(BuildGauge()
                    .Name("reformer_inflight_requests")
                    .Help("Requests accepted and not yet answered (queued or running).")
                    .Register(*registry)
                    .Add({})),
      rejected_(BuildCounter()
                    .Name("reformer_rejected_total")
                    .Help("Requests refused at admission, by reason.")
                    .Register(*registry)),
      workspace_bytes_(BuildGauge()
                           .Name("reformer_workspace_bytes")
                           .Help("Engine workspace high-water mark per worker.")
                           .Register(*registry)),
      memory_budget_(BuildGauge()
                         .Name("reformer_memory_budget_bytes")
                         .Help("The process-wide memory budget (--memory_budget_bytes): working memory of "
                               "running batches + outputs of responses not yet sent.")
                         .Register(*registry)
                         .Add({})),
      memory_reserved_(BuildGauge()
                           .Name("reformer_memory_reserved_bytes")
                           .Help("Bytes of the memory budget held, by kind (working, output, cache).")
                           .Register(*registry)),
      tokens_processed_(BuildCounter()
                            .Name("reformer_tokens_processed_total")
                            .Help("Real tokens computed by the engine for answered requests.")
                            .Register(*registry)
                            .Add({})),
      time_to_first_token_(BuildHistogram()
                               .Name("reformer_generate_time_to_first_token_seconds")
                               .Help("Generate: from receipt to the first new token (queue + prompt pass).")
                               .Register(*registry)
                               .Add({}, SecondsBuckets())),
      time_per_output_token_(BuildHistogram()
                                 .Name("reformer_generate_time_per_output_token_seconds")
                                 .Help("Generate: time between two consecutive tokens of a stream.")
                                 .Register(*registry)
                                 .Add({}, TokenIntervalBuckets())),
      generated_tokens_(BuildCounter()
                            .Name("reformer_generated_tokens_total")
                            .Help("New tokens generated (all streams).")
                            .Register(*registry)
                            .Add({})),
      active_sequences_(BuildGauge()
                            .Name("reformer_generate_active_sequences")
                            .Help("Generation sequences running or in their prompt pass (not waiting).")
                            .Register(*registry)
                            .Add({})),
      cache_bytes_(BuildGauge()
                       .Name("reformer_generate_cache_bytes")
                       .Help("Bytes of the memory budget held by generation caches.")
                       .Register(*registry)
                       .Add({})),
      grpc_started_(BuildCounter()
                        .Name("grpc_server_started_total")
                        .Help("RPCs started on the server.")
                        .Register(*registry)),
      grpc_handled_(BuildCounter()
                        .Name("grpc_server_handled_total")
                        .Help("RPCs completed on the server, regardless of success or failure.")
                        .Register(*registry)),
      grpc_handling_seconds_(BuildHistogram()
                                 .Name("grpc_server_handling_seconds")
                                 .Help("RPC handling latency until the server finished the RPC.")
                                 .Register(*registry)),
      credential_reloads_(BuildCounter()
                              .Name("reformer_credential_reloads_total")
                              .Help("Changed credential files (kind tls or tokens) taken into use (result "
                                    "reloaded) or refused, keeping the previous ones (result rejected).")
                              .Register(*registry)),
      certificate_expiry_(BuildGauge()
                              .Name("reformer_tls_certificate_expiry_timestamp_seconds")
                              .Help("When the TLS certificate the gRPC port serves expires (Unix time).")
                              .Register(*registry)),
      http_evicted_(BuildCounter()
                        .Name("reformer_http_connections_evicted_total")
                        .Help("Idle HTTP connections closed to admit a new one at a connection "
                              "limit (limit per_client: --http_max_connections_per_client; "
                              "total: --http_max_connections).")
                        .Register(*registry)),
      seconds_buckets_(SecondsBuckets()) {
  BuildGauge()
      .Name("reformer_build_info")
      .Help("Build and model information (value 1).")
      .Register(*registry)
      .Add({{"version", options.version}, {"model", options.model_name}})
      .Set(1);
  // Pre-create the rejection series so dashboards see zeros, not gaps.
  for (const char* reason : {"queue_full", "too_large", "draining", "invalid", "connection_streams"}) {
    rejected_.Add({{"reason", reason}});
  }
  for (const char* kind : {"working", "output", "cache"}) memory_reserved_.Add({{"kind", kind}});
  for (const char* limit : {"per_client", "total"}) http_evicted_.Add({{"limit", limit}});
}

void ServerMetrics::OnHttpConnectionEvicted(const std::string& limit) {
  http_evicted_.Add({{"limit", limit}}).Increment();
}

void ServerMetrics::RpcStarted(const std::string& type, const std::string& service,
                               const std::string& method) {
  grpc_started_.Add({{"grpc_type", type}, {"grpc_service", service}, {"grpc_method", method}})
      .Increment();
}

void ServerMetrics::RpcHandled(const std::string& type, const std::string& service,
                               const std::string& method, absl::StatusCode code, double seconds) {
  grpc_handled_
      .Add({{"grpc_type", type},
            {"grpc_service", service},
            {"grpc_method", method},
            {"grpc_code", GrpcCodeLabel(code)}})
      .Increment();
  grpc_handling_seconds_
      .Add({{"grpc_type", type}, {"grpc_service", service}, {"grpc_method", method}},
           seconds_buckets_)
      .Observe(seconds);
}

void ServerMetrics::RequestFinished(const std::string& method, const std::string& tenant,
                                    absl::StatusCode code, double seconds, int64_t input_tokens,
                                    int64_t documents, int64_t unix_ms) {
  requests_total_.Add({{"method", method}, {"code", GrpcCodeLabel(code)}, {"tenant", tenant}})
      .Increment();
  request_duration_.Add({{"method", method}}, seconds_buckets_).Observe(seconds);
  if (input_tokens > 0) input_tokens_.Observe(static_cast<double>(input_tokens));
  absl::MutexLock lock(&mu_);
  ModelStatsSnapshot::Duration& d = code == absl::StatusCode::kOk ? stats_.success : stats_.fail;
  d.count += 1;
  d.ns += ToNs(seconds);
  if (code == absl::StatusCode::kOk) {
    stats_.inference_count += static_cast<uint64_t>(std::max<int64_t>(documents, 0));
    stats_.last_inference_ms = static_cast<uint64_t>(std::max<int64_t>(unix_ms, 0));
  }
}

void ServerMetrics::ObserveDocumentTokens(int64_t tokens) {
  document_tokens_.Observe(static_cast<double>(tokens));
}

void ServerMetrics::OnQueueChanged(int64_t queued_requests, int64_t queued_tokens) {
  queue_requests_.Set(static_cast<double>(queued_requests));
  queue_tokens_.Set(static_cast<double>(queued_tokens));
}

void ServerMetrics::OnRejected(const std::string& reason) {
  rejected_.Add({{"reason", reason}}).Increment();
}

void ServerMetrics::OnBatch(int64_t documents, int64_t tokens) {
  batch_size_.Observe(static_cast<double>(documents));
  batch_tokens_.Observe(static_cast<double>(tokens));
  absl::MutexLock lock(&mu_);
  stats_.execution_count += 1;
}

void ServerMetrics::OnBatchComputed(int64_t documents, double seconds) {
  absl::MutexLock lock(&mu_);
  ModelStatsSnapshot::Duration& d = stats_.batch_sizes[static_cast<uint64_t>(std::max<int64_t>(documents, 0))];
  d.count += 1;
  d.ns += static_cast<uint64_t>(std::max(0.0, seconds) * 1e9);
}

void ServerMetrics::OnRequestDone(const std::string& /*method*/, const absl::Status& status,
                                  int64_t tokens, double queue_seconds, double compute_seconds) {
  queue_duration_.Observe(queue_seconds);
  if (status.ok()) {
    compute_duration_.Observe(compute_seconds);
    tokens_processed_.Increment(static_cast<double>(tokens));
  }
  absl::MutexLock lock(&mu_);
  stats_.queue.count += 1;
  stats_.queue.ns += ToNs(queue_seconds);
  if (status.ok()) {
    stats_.compute.count += 1;
    stats_.compute.ns += ToNs(compute_seconds);
  }
}

void ServerMetrics::OnWorkspaceBytes(int worker, size_t bytes) {
  workspace_bytes_.Add({{"worker", std::to_string(worker)}}).Set(static_cast<double>(bytes));
}

void ServerMetrics::OnInflightChanged(int64_t inflight) {
  inflight_.Set(static_cast<double>(inflight));
}

void ServerMetrics::OnMemoryBudget(size_t total_bytes) { memory_budget_.Set(static_cast<double>(total_bytes)); }

void ServerMetrics::OnMemoryReserved(const std::string& kind, size_t bytes) {
  memory_reserved_.Add({{"kind", kind}}).Set(static_cast<double>(bytes));
}

void ServerMetrics::OnTimeToFirstToken(double seconds) { time_to_first_token_.Observe(seconds); }

void ServerMetrics::OnTokenInterval(double seconds) { time_per_output_token_.Observe(seconds); }

void ServerMetrics::OnGeneratedTokens(int64_t tokens) {
  generated_tokens_.Increment(static_cast<double>(tokens));
}

void ServerMetrics::OnActiveSequences(int64_t sequences) {
  active_sequences_.Set(static_cast<double>(sequences));
}

void ServerMetrics::OnCacheBytes(size_t bytes) { cache_bytes_.Set(static_cast<double>(bytes)); }

void ServerMetrics::OnCredentialReload(const std::string& kind, const std::string& result) {
  credential_reloads_.Add({{"kind", kind}, {"result", result}}).Increment();
}

void ServerMetrics::SetCertificateExpiry(double unix_seconds) {
  certificate_expiry_.Add({}).Set(unix_seconds);
}

ModelStatsSnapshot ServerMetrics::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace reformer::serving
