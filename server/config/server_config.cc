#include "server/config/server_config.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/config/host.h"

namespace reformer::serving {
namespace {

constexpr char kSynopsis[] = "reformer-server [flags]";
constexpr char kDescription[] =
    "Serves a Hugging Face Reformer model over gRPC (KServe v2 + reformer.v1, health, reflection) "
    "and HTTP (/metrics, /healthz, /readyz, /v2). Every flag can also be set with the environment "
    "variable REFORMER_<FLAG> (e.g. REFORMER_GRPC_PORT=9001); the command line wins.";

// REFORMER_* variables that are not server flags, so no warning: the build and test scripts' own,
// REFORMER_MAX_ISA (read by the engine's ISA dispatch before any flag is parsed) and REFORMER_TOKEN
// (reformer-cli's bearer token, README "reformer-cli").
const std::vector<std::string>& NonFlagVariables() {
  static const auto* const kNames = new std::vector<std::string>{
      "REFORMER_SOURCE_DIR",  "REFORMER_BINARY_DIR",          "REFORMER_EXTRA_PACKAGES",
      "REFORMER_IMAGE_CACHE", "REFORMER_IMAGE_TEST_BUDGET_S", "REFORMER_PYTHON",
      "REFORMER_MAX_ISA",     "REFORMER_TOKEN"};
  return *kNames;
}

// gRPC cannot send a message of 2 GiB or more; the send limit is max_response_bytes + 1 MiB.
constexpr int64_t kMaxResponseBytes = (int64_t{2046}) << 20;
constexpr int64_t kMessageSlackBytes = int64_t{1} << 20;
// The receive limit is 16 B per token (INT64 ids + mask, or text) per request, plus slack.
constexpr int64_t kMaxTokensPerRequest = int64_t{1} << 26;
constexpr int kMaxThreads = 1024;
// Longest duration a seconds flag takes: a day. Longer is a typo, and would overflow the conversions.
constexpr double kMaxSeconds = 86400;

std::string Basename(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

void RegisterServerFlags(ServerConfig* c, FlagSet* f) {
  // Model.
  f->Add("model_dir", &c->model.dir,
         "Model directory (config.json, model.safetensors, optional rotations.safetensors and tokenizer). "
         "Empty = the bundled default model.")
      .Meta("DIR");
  f->Add("model_name", &c->model.name, "Served model name. Empty = the basename of the model directory.")
      .Meta("NAME");
  f->Add("compute_type", &c->model.compute_type,
         "Compute type of the model's matmuls: float32 (exact), bfloat16, int8, or auto (the fastest this CPU "
         "runs). A type the CPU cannot run fails start-up naming the missing instruction set (docs/isa.md).")
      .OneOf({"float32", "bfloat16", "int8", "auto"});
  // Ports.
  f->Add("bind_address", &c->listen.bind_address, "Address both ports listen on.").Meta("ADDRESS");
  f->Add("grpc_port", &c->listen.grpc_port,
         "gRPC port (KServe v2, reformer.v1, health, reflection); 0 = any free port (printed at start).")
      .Range(0, 65535)
      .Meta("PORT");
  f->Add("http_port", &c->listen.http_port,
         "HTTP port (/metrics, /healthz, /readyz, /v2); 0 = any free port (printed at start).")
      .Range(0, 65535)
      .Meta("PORT");
  f->Add("http_api", &c->http.api,
         "The KServe REST API (/v2 metadata, inference) on the plaintext HTTP port. auto = on unless "
         "--tls_cert_file is set (then the port serves only probes and /metrics, so nothing of a request "
         "travels in the clear); on = also with TLS (e.g. behind a mesh that encrypts pod traffic).")
      .OneOf({"auto", "on", "off"});
  f->Add("http_threads", &c->http.threads,
         "HTTP threads serving requests with a body (REST inference, generation); bodiless GET/HEAD "
         "(probes, /metrics, metadata) have their own 4 threads, and connections waiting for a request "
         "hold no thread.")
      .Range(1, kMaxThreads);
  f->Add("http_request_timeout_s", &c->http.request_timeout_s,
         "Longest an HTTP client may take to send a whole request head (then 408), and longest a "
         "response write may make no progress.")
      .RangeReal(0.001, kMaxSeconds)
      .Meta("SECONDS");
  f->Add("http_keep_alive_timeout_s", &c->http.keep_alive_timeout_s,
         "Longest an idle kept-alive HTTP connection is held.")
      .RangeReal(0.001, kMaxSeconds)
      .Meta("SECONDS");
  f->Add("http_max_connections", &c->http.max_connections,
         "Most open HTTP connections. One more closes the oldest idle connection of any client "
         "(kept alive between requests, or silent since it opened) to make room; only when every "
         "one is in the middle of a request is it answered 503 and closed. Each idle one costs a "
         "descriptor and a small buffer, no thread.")
      .Range(16, 1 << 20);
  f->Add("http_max_connections_per_client", &c->http.max_connections_per_client,
         "Most open HTTP connections from one client address. One more closes that address's "
         "oldest idle connection to make room (so probes from behind the same NAT address still "
         "get in); only when all are in the middle of a request is it answered 503 and closed. "
         "Evictions count in reformer_http_connections_evicted_total{limit}.")
      .Range(1, 1 << 20);
  f->Add("http_max_head_bytes", &c->http.max_head_bytes,
         "Largest HTTP request head (request line and headers); larger gets 431.")
      .Range(1024, 1 << 20)
      .Meta("BYTES");
  f->Add("http_infer_threads", &c->http.infer_threads,
         "Most HTTP threads waiting on a REST inference at once; more concurrent REST inferences get 503 "
         "with Retry-After, and the other threads always answer probes, /metrics and metadata. "
         "0 = 3/4 of --http_threads.")
      .Range(0, kMaxThreads);
  f->Add("http_max_body_bytes", &c->http.max_body_bytes,
         "Largest REST request body; a larger Content-Length gets 413 before the body is read. "
         "0 = the gRPC receive limit (16 bytes x --max_tokens_per_request + 1 MiB).")
      .Min(0);
  f->Add("http_body_timeout_s", &c->http.body_timeout_s,
         "Longest a REST client may take to send a request body (then 408).")
      .RangeReal(0.001, kMaxSeconds)
      .Meta("SECONDS");
  // Workers.
  f->Add("workers", &c->workers.workers,
         "Worker threads, each with its own engine session. 0 = from the CPU quota (cgroup cpu.max, else "
         "the cores): one single-threaded worker per CPU, or CPUs / --threads_per_worker.")
      .Range(0, kMaxThreads);
  f->Add("threads_per_worker", &c->workers.threads_per_worker,
         "OpenMP threads per worker. 0 = CPUs / workers.")
      .Range(0, kMaxThreads);
  f->Add("workspace_budget_bytes", &c->workers.workspace_budget_bytes, "Engine workspace bound per worker.")
      .Min(1);
  // Batching and admission.
  f->Add("max_batch_tokens", &c->batching.max_batch_tokens,
         "Most real tokens in one engine batch, at least the model's context. 0 = max(65536, the model's "
         "context), so a document of the full context always fits.")
      .Min(0);
  f->Add("max_batch_size", &c->batching.max_batch_size, "Most documents in one engine batch.").Min(1);
  f->Add("long_batch_tokens", &c->batching.long_batch_tokens,
         "Batches above this many tokens are long; with >= 2 workers at most workers-1 long batches run at "
         "once, so short requests always find a worker. 0 = no reservation.")
      .Min(0);
  f->Add("batch_fill_tokens", &c->batching.batch_fill_tokens,
         "Most tokens in a batch of several documents (a longer document runs alone): bigger batches compute "
         "no faster per token and leave other workers idle. 0 = --max_batch_tokens.")
      .Min(0);
  f->Add("batch_length_ratio", &c->batching.batch_length_ratio,
         "Documents in one batch have lengths within this factor of each other.")
      .MinReal(1.0);
  f->Add("memory_budget_bytes", &c->batching.memory_budget_bytes,
         "One process-wide bound, shared by all workers, on the engine's working memory of the running "
         "batches plus the outputs of requests until their responses are sent.")
      .Min(1);
  f->Add("max_queue_delay_ms", &c->batching.max_queue_delay_ms, "Longest a request waits for batch mates.")
      .Min(0);
  f->Add("max_queue_requests", &c->batching.max_queue_requests,
         "Queued requests beyond which new ones get UNAVAILABLE.")
      .Min(1);
  f->Add("max_queue_tokens", &c->batching.max_queue_tokens,
         "Queued tokens beyond which new requests get UNAVAILABLE.")
      .Min(1);
  f->Add("priority_aging_s", &c->batching.priority_aging_s,
         "A request queued this long is ordered as if it had the highest priority (by arrival), so lower "
         "priorities cannot starve. 0 = arrival order only.")
      .RangeReal(0, kMaxSeconds)
      .Meta("SECONDS");
  // Generation.
  f->Add("generate_workers", &c->generate.workers,
         "Generation worker threads (Generate, HTTP generate), each with its own engine decoder, beside the "
         "forward workers; each steps all its running sequences together. 0 = no generation.")
      .Range(0, kMaxThreads);
  f->Add("generate_threads_per_worker", &c->generate.threads_per_worker,
         "OpenMP threads per generation worker. 0 = CPUs / --generate_workers.")
      .Range(0, kMaxThreads);
  f->Add("generate_max_active", &c->generate.max_active,
         "Most sequences a generation worker runs at once (one decoding step advances all of them); more "
         "wait in the queue.")
      .Range(1, 4096);
  f->Add("generate_max_prefill_tokens", &c->generate.max_prefill_tokens,
         "Most prompt tokens of one prompt pass (several new prompts share one; a longer prompt runs alone).")
      .Min(1);
  f->Add("generate_max_waiting", &c->generate.max_waiting,
         "Generation requests waiting for memory or a free slot beyond which new ones get UNAVAILABLE.")
      .Min(1);
  f->Add("generate_max_unsent", &c->generate.max_unsent,
         "Per generation stream: messages not yet taken by the client before its sequence pauses (it keeps "
         "its cache and makes no tokens until the client reads).")
      .Min(1);
  f->Add("generate_stalled_timeout_s", &c->generate.stalled_timeout_s,
         "A generation stream paused this long (its client reads nothing) is ended RESOURCE_EXHAUSTED and its "
         "cache freed.")
      .RangeReal(0.001, kMaxSeconds)
      .Meta("SECONDS");
  f->Add("generate_max_streams_per_connection", &c->generate.max_streams_per_connection,
         "Most active Generate streams of one gRPC client connection (each client of a Unix socket is its own); one more is RESOURCE_EXHAUSTED naming this "
         "limit, so one client cannot hold every generation slot. (An HTTP/1.1 connection carries one generate "
         "request at a time.)")
      .Range(1, 4096);
  // Request limits.
  f->Add("max_tokens_per_request", &c->limits.max_tokens_per_request,
         "Most tokens over one request's documents (more: INVALID_ARGUMENT). 0 = 8 x the model's context.")
      .Range(0, kMaxTokensPerRequest);
  f->Add("max_response_bytes", &c->limits.max_response_bytes,
         "Largest response; requests whose outputs would exceed it are refused up front (RESOURCE_EXHAUSTED).")
      .Range(1, kMaxResponseBytes);
  // gRPC connections.
  f->Add("keepalive_time_s", &c->grpc.keepalive_time_s, "Server keepalive ping interval. 0 = gRPC's default.")
      .Min(0);
  f->Add("keepalive_timeout_s", &c->grpc.keepalive_timeout_s, "Keepalive ping acknowledgement timeout.").Min(1);
  f->Add("min_client_ping_interval_s", &c->grpc.min_client_ping_interval_s,
         "Clients pinging more often than this (without data) are told to back off.")
      .Min(0);
  f->Add("max_connection_age_s", &c->grpc.max_connection_age_s,
         "Close connections after this age so clients re-resolve (Kubernetes scale-out). 0 = never.")
      .Min(0);
  f->Add("max_connection_age_grace_s", &c->grpc.max_connection_age_grace_s,
         "Grace for the RPCs of a connection being aged out.")
      .Min(0);
  f->Add("max_connection_idle_s", &c->grpc.max_connection_idle_s, "Close idle connections after this. 0 = never.")
      .Min(0);
  f->Add("max_concurrent_streams", &c->grpc.max_concurrent_streams,
         "Concurrent RPCs per HTTP/2 connection; more wait in the client.")
      .Range(1, 1 << 20);
  f->Add("grpc_resource_quota_bytes", &c->grpc.resource_quota_bytes,
         "gRPC's resource quota: memory for its transport buffers.")
      .Min(int64_t{1} << 20);
  f->Add("grpc_resource_quota_threads", &c->grpc.resource_quota_threads,
         "Threads gRPC may use for its callbacks. 0 = gRPC's default.")
      .Range(0, kMaxThreads);
  f->Add("stream_max_unsent_responses", &c->grpc.stream_max_unsent_responses,
         "Per ModelStreamInfer call: responses not yet taken by the client before reading pauses.")
      .Min(1);
  f->Add("stream_max_unsent_bytes", &c->grpc.stream_max_unsent_bytes,
         "Per ModelStreamInfer call: bytes of responses not yet taken by the client before reading pauses. "
         "0 = 1/64 of --memory_budget_bytes, at most 64 MiB (64 stalled streams hold at most the budget).")
      .Min(0);
  f->Add("stream_stalled_timeout_s", &c->grpc.stream_stalled_timeout_s,
         "A ModelStreamInfer call whose client takes no response for this long is ended RESOURCE_EXHAUSTED "
         "and its responses' memory freed.")
      .RangeReal(0.001, kMaxSeconds)
      .Meta("SECONDS");
  // Security.
  f->Add("tls_cert_file", &c->security.tls_cert_file,
         "PEM certificate chain (server's first) for the gRPC port, which then accepts TLS only; re-read when "
         "it changes. Empty = plaintext.")
      .Meta("FILE");
  f->Add("tls_key_file", &c->security.tls_key_file, "PEM private key of --tls_cert_file (unencrypted).")
      .Meta("FILE");
  f->Add("tls_client_ca_file", &c->security.tls_client_ca_file,
         "PEM CA bundle: gRPC clients must present a certificate it verifies (mutual TLS). Needs "
         "--tls_cert_file.")
      .Meta("FILE");
  f->Add("auth_tokens_file", &c->security.auth_tokens_file,
         "Lines 'name:token': every call except health, liveness and readiness needs 'authorization: Bearer "
         "<token>'; the name labels its requests (tenant). Re-read when it changes. Empty = no tokens.")
      .Meta("FILE");
  f->Add("credentials_poll_interval_s", &c->security.credentials_poll_interval_s,
         "How often the TLS and token files are checked for changes.")
      .RangeReal(0.01, kMaxSeconds)
      .Meta("SECONDS");
  // Start and shutdown.
  f->Add("warmup", &c->warmup, "Run one short forward through the serving path before reporting READY.");
  f->Add("drain_timeout_s", &c->shutdown.drain_timeout_s,
         "On SIGTERM, how long queued and running work may finish.")
      .Min(0);
  f->Add("drain_min_s", &c->shutdown.drain_min_s,
         "After SIGTERM keep the ports up (readiness NOT_SERVING, new requests UNAVAILABLE) at least this "
         "long, so load balancers see readiness flip before the port closes.")
      .RangeReal(0, kMaxSeconds);
  f->Add("log_level", &c->log_level, "Least severe log messages written to stderr.")
      .OneOf({"debug", "info", "warning", "error"});
}

namespace {

// The server's flag set bound to `config`.
std::unique_ptr<FlagSet> ServerFlags(ServerConfig* config) {
  auto flags = std::make_unique<FlagSet>(kSynopsis, kDescription);
  flags->SetEnvironmentPrefix(kEnvironmentPrefix);
  RegisterServerFlags(config, flags.get());
  return flags;
}

// Flags that only work together.
absl::Status CheckSecurityFlags(const SecurityConfig& s) {
  if (s.tls_cert_file.empty() != s.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together: set both or neither");
  }
  if (!s.tls_client_ca_file.empty() && s.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file (mutual TLS) needs --tls_cert_file and --tls_key_file (the server's own certificate)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CommandLine> ParseServerCommandLine(
    absl::Span<const std::string> args, absl::Span<const std::pair<std::string, std::string>> env,
    ServerConfig* config) {
  std::unique_ptr<FlagSet> server_flags = ServerFlags(config);
  FlagSet& flags = *server_flags;
  CommandLine out;
  if (absl::Status s = flags.ApplyEnvironment(env, NonFlagVariables(), &out.warnings); !s.ok()) return s;
  if (absl::Status s = flags.Parse(args); !s.ok()) return s;
  out.help = flags.help_requested();
  if (out.help) return out;
  if (absl::Status s = CheckSecurityFlags(config->security); !s.ok()) return s;
  return out;
}

bool HttpApiEnabled(const ServerConfig& config) {
  return config.http.api == "on" || (config.http.api == "auto" && config.security.tls_cert_file.empty());
}

std::string ServerUsage() {
  ServerConfig defaults;
  return ServerFlags(&defaults)->Usage();
}

std::string ServerFlagsMarkdown() {
  ServerConfig defaults;
  return ServerFlags(&defaults)->MarkdownTable();
}

absl::Status ResolveModelDir(const std::string& exe_dir, ServerConfig* config) {
  if (!config->model.dir.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> found = FindDefaultModelDir(exe_dir);
  if (!found.ok()) return found.status();
  config->model.dir = *found;
  return absl::OkStatus();
}

absl::Status ResolveServerConfig(const ResolveFacts& facts, ServerConfig* c) {
  if (facts.context < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the model's context must be >= 1, got ", facts.context));
  }
  if (c->model.name.empty()) c->model.name = Basename(c->model.dir);
  if (c->model.name.empty() || c->model.name.find_first_of("/ \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--model_name '", c->model.name, "' is not a usable model name (empty, or contains '/' or spaces)"));
  }
  ResolveThreads(facts.cpus, &c->workers.workers, &c->workers.threads_per_worker);
  if (c->generate.threads_per_worker == 0) {
    c->generate.threads_per_worker = std::max(1, facts.cpus / std::max(1, c->generate.workers));
  }
  if (c->batching.max_batch_tokens == 0) c->batching.max_batch_tokens = std::max<int64_t>(65536, facts.context);
  if (c->batching.max_batch_tokens < facts.context) {  // such a document could never be batched
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_batch_tokens=", c->batching.max_batch_tokens, " is below its minimum, the model's context of ",
        facts.context, " tokens (max_position_embeddings): a document that long could never be batched"));
  }
  if (c->limits.max_tokens_per_request == 0) {
    c->limits.max_tokens_per_request = std::min(8 * facts.context, kMaxTokensPerRequest);
  }
  // Explicit gRPC message limits: a request of max_tokens_per_request tokens as INT64 ids + mask
  // (or text at up to 16 bytes per token), a response of max_response_bytes, plus framing slack.
  c->grpc.max_receive_message_bytes = 16 * c->limits.max_tokens_per_request + kMessageSlackBytes;
  c->grpc.max_send_message_bytes = c->limits.max_response_bytes + kMessageSlackBytes;
  // One stream's unsent responses: a 1/64 share of the memory budget (server/grpc/stream_reactor.h).
  if (c->grpc.stream_max_unsent_bytes == 0) {
    c->grpc.stream_max_unsent_bytes = std::clamp<int64_t>(c->batching.memory_budget_bytes / 64, 1, int64_t{64} << 20);
  }
  // REST bodies carry the same tensors as gRPC messages: the same bound.
  if (c->http.max_body_bytes == 0) c->http.max_body_bytes = c->grpc.max_receive_message_bytes;
  if (c->http.infer_threads == 0) c->http.infer_threads = std::max(1, c->http.threads * 3 / 4);
  if (c->http.infer_threads > c->http.threads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http_infer_threads=", c->http.infer_threads, " is above --http_threads=", c->http.threads,
        "; keep threads free for probes and /metrics"));
  }
  return absl::OkStatus();
}

std::string DescribeResolved(const ServerConfig& c, int cpus) {
  return absl::StrFormat(
      "cpus %d: %d workers x %d threads; max_batch_tokens %d, max_batch_size %d, long_batch_tokens %d, "
      "memory_budget_bytes %d, max_tokens_per_request %d, max_response_bytes %d; generation: %d workers x "
      "%d threads",
      cpus, c.workers.workers, c.workers.threads_per_worker, c.batching.max_batch_tokens,
      c.batching.max_batch_size, c.batching.long_batch_tokens, c.batching.memory_budget_bytes,
      c.limits.max_tokens_per_request, c.limits.max_response_bytes, c.generate.workers,
      c.generate.threads_per_worker);
}

}  // namespace reformer::serving
