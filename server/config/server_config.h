// ServerConfig: reformer-server's whole configuration as one typed tree, resolved in one place.
//
//   1. ParseServerCommandLine: defaults (the member initializers below, each written once) <-
//      REFORMER_* environment variables <- command line. Every flag is declared once, in
//      RegisterServerFlags (server_config.cc), with its help text and allowed range; a value out of
//      range is rejected there naming the flag (or the variable). Unknown REFORMER_* variables are
//      warnings naming the nearest flag.
//   2. ResolveModelDir: an empty --model_dir becomes the bundled default model's directory.
//   3. ResolveServerConfig: after the model is loaded, every "0 = automatic" value becomes its
//      value (threads from the CPU quota, batch and request limits from the model's context, the
//      model name from the directory) and the derived gRPC message limits are computed. After it no
//      field holds "automatic".
//
// Adding a flag: a field with its default in the struct it belongs to, and one Add(...) line in
// RegisterServerFlags. The README's configuration table is generated from the same list
// (server_config_test fails when it drifts). component_options.h turns the resolved tree into the
// components' option structs (component_options_test: a default ServerConfig gives exactly the
// components' own defaults, so a default is not written twice in different values).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/base/flags.h"

namespace reformer::serving {

struct ModelConfig {
  std::string dir;   // "" = the bundled default model (ResolveModelDir)
  std::string name;  // "" = basename of dir (ResolveServerConfig)
  std::string compute_type = "float32";  // float32|bfloat16|int8|auto (docs/isa.md §3)
};

struct ListenConfig {
  std::string bind_address = "0.0.0.0";
  int grpc_port = 8001;  // 0 = any free port
  int http_port = 8000;  // 0 = any free port
};

struct GrpcConfig {
  int64_t keepalive_time_s = 60;  // 0 = gRPC's default
  int64_t keepalive_timeout_s = 20;
  int64_t min_client_ping_interval_s = 10;
  int64_t max_connection_age_s = 300;  // 0 = never
  int64_t max_connection_age_grace_s = 30;
  int64_t max_connection_idle_s = 0;  // 0 = never
  int64_t resource_quota_bytes = int64_t{1} << 30;
  int resource_quota_threads = 0;  // 0 = gRPC's default
  int max_concurrent_streams = 64;
  int64_t stream_max_unsent_responses = 16;
  int64_t stream_max_unsent_bytes = 0;  // 0 = a share of the memory budget (ResolveServerConfig)
  double stream_stalled_timeout_s = 60;
  // Derived by ResolveServerConfig (not flags): explicit message limits.
  int64_t max_receive_message_bytes = 0;
  int64_t max_send_message_bytes = 0;
};

struct HttpConfig {
  // The KServe REST API (/v2 metadata, inference) on the plaintext HTTP port: "auto" = on unless
  // the gRPC port uses TLS, "on", "off". Probes and /metrics are always served.
  std::string api = "auto";
  int threads = 128;
  double request_timeout_s = 5;
  double keep_alive_timeout_s = 2;
  int max_connections = 4096;
  int max_connections_per_client = 256;
  int max_head_bytes = 16384;
  int infer_threads = 0;       // 0 = 3/4 of threads (ResolveServerConfig)
  int64_t max_body_bytes = 0;  // 0 = the gRPC receive limit (ResolveServerConfig)
  double body_timeout_s = 60;
};

struct WorkerConfig {
  int workers = 0;             // 0 = from the CPU quota
  int threads_per_worker = 0;  // 0 = CPUs / workers
  int64_t workspace_budget_bytes = int64_t{256} << 20;
};

struct BatchingConfig {
  int64_t max_batch_tokens = 0;  // 0 = max(65536, context)
  int64_t max_batch_size = 32;
  int64_t long_batch_tokens = 16384;  // 0 = no reservation for short work
  int64_t batch_fill_tokens = 16384;  // most tokens in a batch of several documents; 0 = max_batch_tokens
  double batch_length_ratio = 4.0;
  int64_t memory_budget_bytes = int64_t{4} << 30;
  int64_t max_queue_delay_ms = 5;
  int64_t max_queue_requests = 1024;
  int64_t max_queue_tokens = int64_t{4} << 20;
  double priority_aging_s = 10;
};

// Generation (reformer.v1 Generate, HTTP generate): its own worker threads, each with an engine
// Decoder (server/inference/generation_service.h).
struct GenerateConfig {
  int workers = 1;             // 0 = no generation
  int threads_per_worker = 0;  // 0 = CPUs / generate workers
  int64_t max_active = 64;
  int64_t max_prefill_tokens = 65536;
  int64_t max_waiting = 1024;
  int64_t max_unsent = 16;
  double stalled_timeout_s = 60;
  int64_t max_streams_per_connection = 16;  // active Generate streams of one gRPC connection
};

struct LimitsConfig {
  int64_t max_tokens_per_request = 0;  // 0 = 8 x context
  int64_t max_response_bytes = int64_t{512} << 20;
};

struct ShutdownConfig {
  int64_t drain_timeout_s = 30;
  double drain_min_s = 0;
};

struct SecurityConfig {
  std::string tls_cert_file;       // "" = plaintext gRPC
  std::string tls_key_file;
  std::string tls_client_ca_file;  // "" = no client certificates (TLS, not mutual TLS)
  std::string auth_tokens_file;    // "" = no bearer tokens required
  double credentials_poll_interval_s = 2;
};

struct ServerConfig {
  ModelConfig model;
  ListenConfig listen;
  GrpcConfig grpc;
  HttpConfig http;
  WorkerConfig workers;
  BatchingConfig batching;
  GenerateConfig generate;
  LimitsConfig limits;
  ShutdownConfig shutdown;
  SecurityConfig security;
  bool warmup = true;
  std::string log_level = "info";
};

// Declares every server flag on `flags`, bound to the fields of `config` (the one list).
void RegisterServerFlags(ServerConfig* config, FlagSet* flags);

// The environment prefix of every flag: --grpc_port <-> REFORMER_GRPC_PORT.
inline constexpr char kEnvironmentPrefix[] = "REFORMER_";

struct CommandLine {
  bool help = false;                  // -h/--help: print ServerUsage() to stdout, exit 0
  std::vector<std::string> warnings;  // unknown REFORMER_* variables
};

// Step 1 (see the file comment): `config` starts from its defaults, then `env`, then `args` (the
// arguments after the program name). INVALID_ARGUMENT naming the flag or variable on any bad value.
absl::StatusOr<CommandLine> ParseServerCommandLine(
    absl::Span<const std::string> args, absl::Span<const std::pair<std::string, std::string>> env,
    ServerConfig* config);

// Whether the REST API is served on the HTTP port (--http_api resolved against --tls_cert_file).
bool HttpApiEnabled(const ServerConfig& config);

// The --help text and the README's configuration table (both from RegisterServerFlags).
std::string ServerUsage();
std::string ServerFlagsMarkdown();

// Step 2: an empty model.dir becomes the bundled default model (see FindDefaultModelDir);
// NOT_FOUND lists where it looked.
absl::Status ResolveModelDir(const std::string& exe_dir, ServerConfig* config);

// What ResolveServerConfig needs to know about the loaded model and the machine.
struct ResolveFacts {
  int64_t context = 0;  // the model's max_position_embeddings
  int cpus = 1;         // AvailableCpus()
};

// Step 3: resolves every automatic value and the derived limits. INVALID_ARGUMENT naming the
// flag when the combination cannot work.
absl::Status ResolveServerConfig(const ResolveFacts& facts, ServerConfig* config);

// One line describing the resolved configuration for the start-up log.
std::string DescribeResolved(const ServerConfig& config, int cpus);

}  // namespace reformer::serving
