// ServerMetrics: the server's named Prometheus metric set (names and labels: README.md, "Metrics").
//
// Built once in main on a registry main owns (no global registry) and borrowed by the gRPC layer
// (RPC and request outcomes), the InferenceService (as its InferenceObserver: queue, batches,
// per-request queue/compute time, workspace, the memory budget) and the GenerationService (as its
// GenerationObserver: time to first token, time per output token, generated tokens, active
// sequences, cache bytes). ModelStatistics (KServe) reads Snapshot(), which is
// updated by the same calls that update the Prometheus series.
//
// Histograms use base units: seconds from 1 ms to 10 min, token counts in powers of two up to the
// model's context (per document) or the request limit (per request).
// Thread-safe; every method is cheap (a label lookup and an atomic add).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/inference/generation_service.h"
#include "server/inference/inference_service.h"

namespace reformer::serving {

struct MetricsOptions {
  std::string version = "0.1.0";         // reformer_build_info{version}
  std::string model_name = "default";    // reformer_build_info{model}
  int64_t max_document_tokens = 4096;    // upper range of per-document token histograms
  int64_t max_request_tokens = 32768;    // upper range of reformer_input_tokens
  int64_t max_batch_tokens = 65536;      // upper range of reformer_batch_tokens
  int64_t max_batch_size = 32;           // upper range of reformer_batch_size
};

// Cumulative per-model counters in Triton's ModelStatistics shape.
struct ModelStatsSnapshot {
  struct Duration {
    uint64_t count = 0;
    uint64_t ns = 0;
  };
  uint64_t last_inference_ms = 0;  // since the epoch
  uint64_t inference_count = 0;    // documents answered OK
  uint64_t execution_count = 0;    // engine batches
  Duration success, fail, queue, compute;
  // Documents per batch -> batches run and their summed engine time (OnBatchComputed).
  std::map<uint64_t, Duration> batch_sizes;
};

// reformer_rejected_total's reason for a request an adapter refused before submitting it:
// "invalid" (INVALID_ARGUMENT), "too_large" (RESOURCE_EXHAUSTED), "draining" (UNAVAILABLE while
// draining); nullptr when the refusal is not counted there.
const char* RejectReason(const absl::Status& status, bool draining);

// "OK", "InvalidArgument", ... (the spelling Go's grpc-prometheus and dashboards use).
const char* GrpcCodeLabel(absl::StatusCode code);

class ServerMetrics final : public InferenceObserver, public GenerationObserver {
 public:
  ServerMetrics(prometheus::Registry* registry, const MetricsOptions& options);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // gRPC server metrics. `type` is "unary", "bidi_stream", ...; `service` the full service name.
  void RpcStarted(const std::string& type, const std::string& service, const std::string& method);
  void RpcHandled(const std::string& type, const std::string& service, const std::string& method,
                  absl::StatusCode code, double seconds);

  // One inference request finished (any outcome, including validation errors, rejections and
  // UNAUTHENTICATED): reformer_requests_total{method,code,tenant}, reformer_request_duration_seconds
  // {method}; `tenant` is the token's name, or kAnonymousTenant (server/security/token_store.h)
  // without an authenticated caller, so its values are bounded by the tokens file. `input_tokens`
  // (0 when unknown) feeds reformer_input_tokens; `documents` counts toward inference_count when OK.
  void RequestFinished(const std::string& method, const std::string& tenant, absl::StatusCode code,
                       double seconds, int64_t input_tokens, int64_t documents, int64_t unix_ms);

  // A credential file was re-read with a result other than "unchanged":
  // reformer_credential_reloads_total{kind="tls"|"tokens",result="reloaded"|"rejected"}.
  void OnCredentialReload(const std::string& kind, const std::string& result);
  // reformer_tls_certificate_expiry_timestamp_seconds: when the served certificate expires.
  void SetCertificateExpiry(double unix_seconds);

  // The HTTP front closed an idle connection to admit a new one at a connection limit:
  // reformer_http_connections_evicted_total{limit="per_client"|"total"}.
  void OnHttpConnectionEvicted(const std::string& limit);

  // Tokens of one document (reformer_document_tokens).
  void ObserveDocumentTokens(int64_t tokens);

  // InferenceObserver.
  void OnQueueChanged(int64_t queued_requests, int64_t queued_tokens) override;
  void OnRejected(const std::string& reason) override;
  void OnBatch(int64_t documents, int64_t tokens) override;
  void OnBatchComputed(int64_t documents, double seconds) override;
  void OnRequestDone(const std::string& method, const absl::Status& status, int64_t tokens,
                     double queue_seconds, double compute_seconds) override;
  void OnWorkspaceBytes(int worker, size_t bytes) override;
  void OnInflightChanged(int64_t inflight) override;
  // reformer_memory_budget_bytes (the process-wide --memory_budget_bytes) and
  // reformer_memory_reserved_bytes{kind="working"|"output"|"cache"} (what is held of it).
  void OnMemoryBudget(size_t total_bytes) override;
  void OnMemoryReserved(const std::string& kind, size_t bytes) override;

  // GenerationObserver: reformer_generate_time_to_first_token_seconds,
  // reformer_generate_time_per_output_token_seconds (histograms), reformer_generated_tokens_total,
  // reformer_generate_active_sequences, reformer_generate_cache_bytes; rejections count in
  // reformer_rejected_total{reason}.
  void OnTimeToFirstToken(double seconds) override;
  void OnTokenInterval(double seconds) override;
  void OnGeneratedTokens(int64_t tokens) override;
  void OnActiveSequences(int64_t sequences) override;
  void OnCacheBytes(size_t bytes) override;
  void OnGenerationRejected(const std::string& reason) override { OnRejected(reason); }

  ModelStatsSnapshot Snapshot() const;

  // Bucket helpers (exposed for tests).
  static std::vector<double> SecondsBuckets();
  // 0.5 ms to 10 s (the time between two tokens of a stream).
  static std::vector<double> TokenIntervalBuckets();
  static std::vector<double> PowerOfTwoBuckets(double first, double last);

 private:
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Histogram& queue_duration_;
  prometheus::Histogram& compute_duration_;
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& batch_tokens_;
  prometheus::Histogram& input_tokens_;
  prometheus::Histogram& document_tokens_;
  prometheus::Gauge& queue_requests_;
  prometheus::Gauge& queue_tokens_;
  prometheus::Gauge& inflight_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Gauge>& workspace_bytes_;
  prometheus::Gauge& memory_budget_;
  prometheus::Family<prometheus::Gauge>& memory_reserved_;
  prometheus::Counter& tokens_processed_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& time_per_output_token_;
  prometheus::Counter& generated_tokens_;
  prometheus::Gauge& active_sequences_;
  prometheus::Gauge& cache_bytes_;
  prometheus::Family<prometheus::Counter>& grpc_started_;
  prometheus::Family<prometheus::Counter>& grpc_handled_;
  prometheus::Family<prometheus::Histogram>& grpc_handling_seconds_;
  prometheus::Family<prometheus::Counter>& credential_reloads_;
  prometheus::Family<prometheus::Gauge>& certificate_expiry_;
  prometheus::Family<prometheus::Counter>& http_evicted_;
  std::vector<double> seconds_buckets_;
  std::vector<double> input_token_buckets_;

  mutable absl::Mutex mu_;
  ModelStatsSnapshot stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reformer::serving
