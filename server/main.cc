// reformer-server: the composition root.
//
// Order: flags (+ REFORMER_* environment) -> model -> metrics registry -> InferenceService (workers)
// -> gRPC services + health + reflection, HTTP endpoints -> warm-up forward -> READY -> wait for
// SIGTERM/SIGINT -> DRAINING (readiness NOT_SERVING at once, new requests UNAVAILABLE) -> wait for
// queued/running work up to --drain_timeout_s -> answer leftovers, stop workers -> stop gRPC, HTTP
// -> exit 0. Everything is owned here and destroyed in reverse order of construction.
//
// Signals: SIGTERM/SIGINT are blocked in every thread (the mask is set before any thread starts)
// and taken synchronously by the main thread with sigwait: no handler, no global state.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/base/openmp_env.h"
#include "engine/base/logging.h"
#include "engine/model/engine_api.h"
#include "engine/model/tokenizer.h"
#include "prometheus/registry.h"
#include "server/batching/clock.h"
#include "server/grpc/grpc_server.h"
#include "server/health/health_state.h"
#include "server/http/http_server.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/served_model.h"
#include "server/server_flags.h"

#ifndef REFORMER_VERSION
#define REFORMER_VERSION "0.1.0"
#endif

ABSL_FLAG(std::string, model_dir, "",
          "Model directory (config.json, model.safetensors, optional rotations.safetensors and "
          "tokenizer). Empty = the bundled default model.");
ABSL_FLAG(std::string, model_name, "", "Served model name (default: basename of --model_dir).");
ABSL_FLAG(std::string, bind_address, "0.0.0.0", "Address both ports listen on.");
ABSL_FLAG(int, grpc_port, 8001, "gRPC port (KServe v2, reformer.v1, health, reflection); 0 = any.");
ABSL_FLAG(int, http_port, 8000, "HTTP port (/metrics, /healthz, /readyz, /v2 REST); 0 = any.");
ABSL_FLAG(int, http_threads, 128,
          "HTTP server threads (one per connection being served; headroom keeps probes answering "
          "beside slow clients).");
ABSL_FLAG(int, http_infer_threads, 0,
          "Most HTTP threads that may wait on a REST inference at once (0 = 3/4 of --http_threads); "
          "the rest always answer probes, /metrics and metadata. Beyond it REST inference gets 503.");
ABSL_FLAG(int64_t, http_max_body_bytes, 0,
          "Largest REST request body; larger ones get 413 before they are read (0 = 16 bytes x "
          "--max_tokens_per_request + 1 MiB, the gRPC receive limit).");
ABSL_FLAG(int, workers, 0, "Worker threads, each with its own engine session (0 = from CPU quota).");
ABSL_FLAG(int, threads_per_worker, 0, "OpenMP threads per worker (0 = CPU quota / workers).");
ABSL_FLAG(int64_t, max_batch_tokens, 0,
          "Most real tokens in one engine batch; 0 = max(65536, the model's context), so a "
          "document of the full context always fits.");
ABSL_FLAG(int64_t, max_batch_size, 32, "Most documents in one engine batch.");
ABSL_FLAG(int64_t, long_batch_tokens, 16384,
          "Batches above this many tokens are long; with >= 2 workers at most workers-1 long batches "
          "run at once so short requests always find a worker (0 = no reservation).");
ABSL_FLAG(double, batch_length_ratio, 4.0,
          "Documents in one batch have lengths within this factor of each other.");
ABSL_FLAG(int64_t, memory_budget_bytes, int64_t{4} << 30,
          "Bound on the engine's peak working-memory estimate per batch.");
ABSL_FLAG(int64_t, workspace_budget_bytes, int64_t{256} << 20, "Engine workspace bound per worker.");
ABSL_FLAG(int64_t, max_queue_delay_ms, 5, "Longest a request waits for batch mates.");
ABSL_FLAG(int64_t, max_queue_requests, 1024, "Queued requests beyond which new ones get UNAVAILABLE.");
ABSL_FLAG(int64_t, max_queue_tokens, int64_t{4} << 20,
          "Queued tokens beyond which new requests get UNAVAILABLE.");
ABSL_FLAG(int64_t, max_tokens_per_request, 0,
          "Most tokens over one request's documents (0 = 8 x the model's context).");
ABSL_FLAG(int64_t, max_response_bytes, int64_t{512} << 20,
          "Largest response; requests whose outputs would exceed it are refused up front.");
ABSL_FLAG(int64_t, drain_timeout_s, 30, "On SIGTERM, how long queued/running work may finish.");
ABSL_FLAG(double, drain_min_s, 0,
          "After SIGTERM keep the ports up (readiness NOT_SERVING, new requests UNAVAILABLE) for at "
          "least this long, so load balancers see readiness flip before the port closes.");
ABSL_FLAG(int64_t, keepalive_time_s, 60, "Server keepalive ping interval (0 = gRPC default).");
ABSL_FLAG(int64_t, keepalive_timeout_s, 20, "Keepalive ping ack timeout.");
ABSL_FLAG(int64_t, min_client_ping_interval_s, 10,
          "Clients pinging more often than this (without data) are told to back off.");
ABSL_FLAG(int64_t, max_connection_age_s, 300,
          "Close connections after this age so clients re-resolve (0 = never).");
ABSL_FLAG(int64_t, max_connection_age_grace_s, 30, "Grace for RPCs on a connection being aged out.");
ABSL_FLAG(int64_t, max_connection_idle_s, 0, "Close idle connections after this (0 = never).");
ABSL_FLAG(bool, warmup, true, "Run one short forward before reporting READY.");

namespace reformer::serving {
namespace {

const std::vector<std::string> kEnvFlags = {
    "model_dir", "model_name", "bind_address", "grpc_port", "http_port", "http_threads", "http_infer_threads",
    "http_max_body_bytes", "workers",
    "threads_per_worker", "max_batch_tokens", "max_batch_size", "long_batch_tokens",
    "batch_length_ratio", "memory_budget_bytes",
    "workspace_budget_bytes", "max_queue_delay_ms", "max_queue_requests", "max_queue_tokens",
    "max_tokens_per_request", "max_response_bytes", "drain_timeout_s", "drain_min_s", "keepalive_time_s",
    "keepalive_timeout_s", "min_client_ping_interval_s", "max_connection_age_s",
    "max_connection_age_grace_s", "max_connection_idle_s", "warmup"};

std::string Basename(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

// One short forward through the whole serving path, before READY.
absl::Status WarmUp(InferenceService* inference, const ServedModel& model) {
  auto request = std::make_unique<InferenceRequest>();
  const int64_t n = std::min<int64_t>(model.context(), 64);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7 + 1) % model.config.vocab_size);
  request->documents.Append(ids);
  request->dims = model.dims();
  request->outputs = {OutputKind::kLogits, OutputKind::kHiddenStates, OutputKind::kTokenLogprobs,
                      OutputKind::kEmbedding};
  request->method = "warmup";
  request->internal = true;  // not in the request, token and latency metrics
  absl::Notification done;
  absl::Status result;
  absl::Status submitted = inference->Submit(std::move(request), [&](InferenceResult r) {
    result = r.status;
    done.Notify();
  });
  if (!submitted.ok()) return submitted;
  done.WaitForNotification();
  return result;
}

int Run(int argc, char** argv) {
  reformer::EnsurePassiveOpenMpWait(argv);
  // Block the termination signals before any thread exists; the main thread takes them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::SetProgramUsageMessage(
      "Serves a Hugging Face Reformer model over gRPC (KServe v2 + reformer.v1) and HTTP.\n"
      "Every flag can also be set with the environment variable REFORMER_<FLAG> "
      "(e.g. REFORMER_GRPC_PORT); the command line wins.");
  if (absl::Status s = ApplyEnvironmentToFlags(kEnvFlags, [](const char* n) { return getenv(n); });
      !s.ok()) {
    fprintf(stderr, "reformer-server: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::ParseCommandLine(argc, argv);

  // --- Model -----------------------------------------------------------------------------------
  std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (model_dir.empty()) {
    absl::StatusOr<std::string> found = FindDefaultModelDir(ExecutableDir(), getenv("REFORMER_MODEL_DIR"));
    if (!found.ok()) {
      LOG_ERROR(found.status().message());
      return 1;
    }
    model_dir = *found;
  }
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::shared_ptr<const ReformerModel>> loaded = ReformerModel::Load(model_dir);
  if (!loaded.ok()) {
    LOG_ERROR("cannot load model from ", model_dir, ": ", loaded.status().ToString());
    return 1;
  }
  std::shared_ptr<const ReformerModel> model = *loaded;
  ServedModel served;
  served.name = absl::GetFlag(FLAGS_model_name).empty() ? Basename(model_dir)
                                                         : absl::GetFlag(FLAGS_model_name);
  served.config = model->config();
  served.tokenizer = model->tokenizer();
  served.tokenizer_name = model->tokenizer() != nullptr ? model->tokenizer()->Name() : "";
  served.rotations_source = model->rotations_source();
  LOG_INFO("loaded model '", served.name, "' from ", model_dir, " in ",
           absl::FormatDuration(absl::Now() - load_start), ": ", served.config.num_layers(),
           " layers, hidden ", served.config.hidden_size, ", vocab ", served.config.vocab_size,
           ", context ", served.context(), ", rotations from ", served.rotations_source,
           ", tokenizer ", served.tokenizer_name.empty() ? "none" : served.tokenizer_name);

  // --- Options ---------------------------------------------------------------------------------
  InferenceOptions options;
  int workers = absl::GetFlag(FLAGS_workers);
  int threads = absl::GetFlag(FLAGS_threads_per_worker);
  const int cpus = AvailableCpus();
  ResolveThreads(cpus, &workers, &threads);
  options.workers = workers;
  options.threads_per_worker = threads;
  options.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens) > 0
                                 ? absl::GetFlag(FLAGS_max_batch_tokens)
                                 : std::max<int64_t>(65536, served.context());
  options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.long_batch_tokens = absl::GetFlag(FLAGS_long_batch_tokens);
  options.length_ratio = absl::GetFlag(FLAGS_batch_length_ratio);
  options.memory_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_memory_budget_bytes));
  options.workspace_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_workspace_budget_bytes));
  options.max_queue_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_queue_delay_ms));
  options.max_queue_requests = absl::GetFlag(FLAGS_max_queue_requests);
  options.max_queue_tokens = absl::GetFlag(FLAGS_max_queue_tokens);
  options.max_tokens_per_request = absl::GetFlag(FLAGS_max_tokens_per_request) > 0
                                       ? absl::GetFlag(FLAGS_max_tokens_per_request)
                                       : 8 * served.context();
  options.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  if (absl::Status s = options.Validate(); !s.ok()) {
    LOG_ERROR("invalid options: ", s.ToString());
    return 2;
  }
  served.max_batch_size = options.max_batch_size;
  ServiceLimits limits;
  limits.max_tokens_per_request = options.max_tokens_per_request;
  limits.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  LOG_INFO("cpus ", cpus, ": ", workers, " workers x ", threads, " threads; max_batch_tokens ",
           options.max_batch_tokens, ", max_batch_size ", options.max_batch_size,
           ", max_tokens_per_request ", limits.max_tokens_per_request, ", max_response_bytes ",
           limits.max_response_bytes);

  // --- Metrics, health, compute ----------------------------------------------------------------
  RealClock clock;
  prometheus::Registry registry;
  MetricsOptions metrics_options;
  metrics_options.version = REFORMER_VERSION;
  metrics_options.model_name = served.name;
  metrics_options.max_document_tokens = served.context();
  metrics_options.max_request_tokens = limits.max_tokens_per_request;
  metrics_options.max_batch_tokens = options.max_batch_tokens;
  metrics_options.max_batch_size = options.max_batch_size;
  ServerMetrics metrics(&registry, metrics_options);
  HealthState health;

  absl::StatusOr<std::unique_ptr<InferenceService>> created =
      InferenceService::Create(model, options, &clock, &metrics);
  if (!created.ok()) {
    LOG_ERROR("cannot start the inference workers: ", created.status().ToString());
    return 1;
  }
  std::unique_ptr<InferenceService> inference = *std::move(created);

  // --- gRPC --------------------------------------------------------------------------------------
  ServiceEnv env;
  env.inference = inference.get();
  env.model = &served;
  env.health = &health;
  env.metrics = &metrics;
  env.clock = &clock;
  env.limits = limits;
  GrpcServerOptions grpc_options;
  grpc_options.address =
      absl::StrCat(absl::GetFlag(FLAGS_bind_address), ":", absl::GetFlag(FLAGS_grpc_port));
  // Explicit message limits: a request of max_tokens_per_request tokens as INT64 ids + mask (or
  // text at up to 16 bytes/token), a response of max_response_bytes, plus framing slack.
  const int64_t slack = int64_t{1} << 20;
  grpc_options.max_receive_message_bytes = 16 * limits.max_tokens_per_request + slack;
  grpc_options.max_send_message_bytes = limits.max_response_bytes + slack;
  grpc_options.keepalive_time = absl::Seconds(absl::GetFlag(FLAGS_keepalive_time_s));
  grpc_options.keepalive_timeout = absl::Seconds(absl::GetFlag(FLAGS_keepalive_timeout_s));
  grpc_options.min_client_ping_interval =
      absl::Seconds(absl::GetFlag(FLAGS_min_client_ping_interval_s));
  grpc_options.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_s));
  grpc_options.max_connection_age_grace =
      absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_grace_s));
  grpc_options.max_connection_idle = absl::Seconds(absl::GetFlag(FLAGS_max_connection_idle_s));
  absl::StatusOr<std::unique_ptr<GrpcServer>> grpc_server =
      GrpcServer::Start(grpc_options, env, &health);
  if (!grpc_server.ok()) {
    LOG_ERROR(grpc_server.status().message());
    inference->Shutdown();
    return 1;
  }
  const int grpc_port = (*grpc_server)->port();

  // --- HTTP --------------------------------------------------------------------------------------
  HttpOptions http_options;
  http_options.port = absl::GetFlag(FLAGS_http_port);
  http_options.bind_address =
      absl::GetFlag(FLAGS_bind_address) == "0.0.0.0" ? "" : absl::GetFlag(FLAGS_bind_address);
  http_options.num_threads = absl::GetFlag(FLAGS_http_threads);
  http_options.infer_threads = absl::GetFlag(FLAGS_http_infer_threads);
  // The same bound as the gRPC receive limit: a request of max_tokens_per_request tokens fits as
  // JSON or binary ids + mask (or text).
  http_options.rest.max_body_bytes = absl::GetFlag(FLAGS_http_max_body_bytes) > 0
                                         ? absl::GetFlag(FLAGS_http_max_body_bytes)
                                         : grpc_options.max_receive_message_bytes;
  absl::StatusOr<std::unique_ptr<HttpServer>> http =
      HttpServer::Start(http_options, &registry, env);
  if (!http.ok()) {
    LOG_ERROR(http.status().message());
    inference->Shutdown();
    (*grpc_server)->Shutdown();
    return 1;
  }
  // Machine-readable line (tests and scripts read the ports from it when given port 0).
  printf("reformer-server listening grpc_port=%d http_port=%d model=%s\n", grpc_port,
         (*http)->port(), served.name.c_str());
  fflush(stdout);
  LOG_INFO("gRPC on ", absl::GetFlag(FLAGS_bind_address), ":", grpc_port, ", HTTP on port ",
           (*http)->port());

  // --- Warm-up, READY ------------------------------------------------------------------------------
  if (absl::GetFlag(FLAGS_warmup)) {
    const absl::Time warm_start = absl::Now();
    if (absl::Status s = WarmUp(inference.get(), served); !s.ok()) {
      LOG_ERROR("warm-up forward failed: ", s.ToString());
      inference->Shutdown();
      (*grpc_server)->Shutdown();
      return 1;
    }
    LOG_INFO("warm-up forward took ", absl::FormatDuration(absl::Now() - warm_start));
  }
  health.SetReady();
  LOG_INFO("READY");

  // --- Wait for SIGTERM/SIGINT, then drain ---------------------------------------------------------
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LOG_INFO("signal ", signal_number, ": draining (readiness NOT_SERVING, new requests UNAVAILABLE)");
  const absl::Time drain_start = absl::Now();
  health.StartDraining();
  inference->StartDraining();
  const absl::Duration drain = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  const bool idle = inference->WaitIdle(drain);
  LOG_INFO(idle ? "drained: no work left" : "drain timeout: answering what is left");
  inference->Shutdown();  // answers anything left, joins the workers
  const absl::Duration min_drain = absl::Seconds(absl::GetFlag(FLAGS_drain_min_s));
  if (absl::Now() - drain_start < min_drain) absl::SleepFor(min_drain - (absl::Now() - drain_start));
  // Every inference RPC has its answer by now; what is left (idle streams, calls racing the
  // close) is cancelled quickly.
  (*grpc_server)->Shutdown(absl::Milliseconds(500));
  http->reset();
  LOG_INFO("stopped");
  return 0;
}

}  // namespace
}  // namespace reformer::serving

int main(int argc, char** argv) { return reformer::serving::Run(argc, argv); }
