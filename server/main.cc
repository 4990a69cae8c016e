// reformer-server: the composition root. It only wires components together and shuts them down;
// what the configuration means is decided in server/config (one tree, resolved in one place).
//
// Order: configuration (flags + REFORMER_* environment) -> credentials (tokens, TLS files: a bad
// one stops the start before the model loads) -> model -> resolved configuration -> metrics
// registry -> InferenceService (forward workers) -> GenerationService (generation workers, on the
// same memory budget) -> gRPC services + health + reflection, HTTP endpoints -> credential poller
// (rotation) -> warm-up forward -> READY -> wait for SIGTERM/SIGINT -> DRAINING (readiness
// NOT_SERVING at once, new requests and generations UNAVAILABLE) -> wait for queued/running work
// and running generations up to --drain_timeout_s -> end leftovers (generations still streaming
// get UNAVAILABLE), stop workers -> stop gRPC (calls still open, e.g. streams whose clients do not
// read, are cancelled after a short grace), HTTP -> exit 0. Everything is owned by Components and
// destroyed in reverse order of construction.
//
// Signals: SIGTERM/SIGINT are blocked in every thread (the mask is set before any thread starts)
// and taken synchronously by the main thread with sigwait: no handler, no global state.
// Exit codes: 0 after a signal (or --help), 1 when start-up fails, 2 for a bad configuration.
#include <signal.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/base/flags.h"
#include "engine/base/logging.h"
#include "engine/base/openmp_env.h"
#include "engine/model/engine_api.h"
#include "engine/model/tokenizer.h"
#include "prometheus/registry.h"
#include "server/batching/clock.h"
#include "server/config/component_options.h"
#include "server/config/host.h"
#include "server/config/server_config.h"
#include "server/grpc/grpc_server.h"
#include "server/health/health_state.h"
#include "server/http/http_server.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"
#include "server/request/served_model.h"
#include "server/security/credential_poller.h"
#include "server/security/tls_material.h"
#include "server/security/token_store.h"

#ifndef REFORMER_VERSION
#define REFORMER_VERSION "0.1.0"
#endif

namespace reformer::serving {
namespace {

// --- Start-up steps --------------------------------------------------------------------------------

// Flags and environment into `config`; the exit code when the process should stop here.
std::optional<int> ParseConfig(int argc, char** argv, ServerConfig* config) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<CommandLine> parsed = ParseServerCommandLine(args, ReadEnvironment(), config);
  if (!parsed.ok()) {
    std::fprintf(stderr, "reformer-server: %s\n(reformer-server --help lists the flags)\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->help) {
    std::fputs(ServerUsage().c_str(), stdout);
    return 0;
  }
  SetMinLogLevel(config->log_level == "debug"     ? LogLevel::kDebug
                 : config->log_level == "warning" ? LogLevel::kWarning
                 : config->log_level == "error"   ? LogLevel::kError
                                                  : LogLevel::kInfo);
  for (const std::string& w : parsed->warnings) LOG_WARNING(w);
  return std::nullopt;
}

ServedModel Describe(const ReformerModel& model, const std::string& name, int64_t max_batch_size) {
  ServedModel served;
  served.name = name;
  served.config = model.config();
  served.compute_type = ComputeTypeName(model.compute_type());
  served.isa = EngineIsaSummary();
  served.tokenizer = model.tokenizer();
  served.tokenizer_name = model.tokenizer() != nullptr ? model.tokenizer()->Name() : "";
  served.rotations_source = model.rotations_source();
  served.max_batch_size = max_batch_size;
  return served;
}

// One short forward through the whole serving path, before READY, within the request limits a
// client's request is held to (a server run with --max_tokens_per_request below 64, or a
// --max_response_bytes that fits only an embedding, must still start): at most 64 tokens, every
// output when they fit, else only the embedding.
absl::Status WarmUp(InferenceService* inference, const ServedModel& model, const ServiceLimits& limits) {
  auto request = std::make_unique<InferenceRequest>();
  const int64_t n = std::min<int64_t>({model.context(), 64, std::max<int64_t>(1, limits.max_tokens_per_request)});
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7 + 1) % model.config.vocab_size);
  request->documents.Append(ids);
  request->dims = model.dims();
  request->outputs = {OutputKind::kLogits, OutputKind::kHiddenStates, OutputKind::kTokenLogprobs,
                      OutputKind::kEmbedding};
  if (request->ResponseBytes() > limits.max_response_bytes) request->outputs = {OutputKind::kEmbedding};
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

// The credentials of --auth_tokens_file and --tls_* (loaded and checked before the model).
struct Credentials {
  std::unique_ptr<TokenStore> tokens;  // nullptr = no tokens
  std::optional<TlsMaterial> tls;      // nullopt = plaintext gRPC
  TlsFiles tls_files;
};

absl::StatusOr<Credentials> LoadCredentials(const SecurityConfig& config, const Clock& clock) {
  Credentials c;
  if (!config.auth_tokens_file.empty()) {
    absl::StatusOr<std::unique_ptr<TokenStore>> tokens = TokenStore::Load(config.auth_tokens_file);
    if (!tokens.ok()) {
      return absl::Status(tokens.status().code(), absl::StrCat("--auth_tokens_file: ", tokens.status().message()));
    }
    c.tokens = *std::move(tokens);
    LOG_INFO("bearer tokens required (", c.tokens->tenants().size(), " tenants in ", config.auth_tokens_file, ")");
  }
  if (!config.tls_cert_file.empty()) {
    c.tls_files = {config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file};
    absl::StatusOr<TlsMaterial> tls = LoadTlsMaterial(c.tls_files, clock.Now());
    if (!tls.ok()) return tls.status();
    c.tls = *std::move(tls);
    LOG_INFO("gRPC port: ", config.tls_client_ca_file.empty() ? "TLS" : "mutual TLS", ", certificate subject ",
             c.tls->leaf.subject, ", serial ", c.tls->leaf.serial, ", valid until ",
             absl::FormatTime(c.tls->leaf.not_after));
  } else if (c.tokens != nullptr) {
    LOG_WARNING("bearer tokens are required but the gRPC port is plaintext: tokens cross the network in the "
                "clear unless something encrypts pod traffic (set --tls_cert_file/--tls_key_file)");
  }
  return c;
}

// Everything the server runs, in construction order (destroyed in reverse).
struct Components {
  RealClock clock;
  prometheus::Registry registry;
  std::unique_ptr<ServerMetrics> metrics;
  HealthState health;
  Credentials credentials;
  std::unique_ptr<InferenceService> inference;
  std::unique_ptr<GenerationService> generation;  // null: no generation (--generate_workers=0)
  std::string generation_off = "it was started without generation";  // why `generation` is null
  std::unique_ptr<GrpcServer> grpc;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<TlsReloader> tls_reloader;
  std::unique_ptr<CredentialPoller> poller;  // calls into grpc and tls_reloader: stopped first

  // Stops what was started, in reverse order; safe after a partial start.
  void Stop(absl::Duration grpc_grace) {
    poller.reset();
    if (generation) generation->Shutdown();  // ends every stream (UNAVAILABLE), joins its workers
    if (inference) inference->Shutdown();  // answers anything left, joins the workers
    // Every inference RPC has its answer by now; what is left (idle streams, calls racing the
    // close) is cancelled quickly.
    if (grpc) grpc->Shutdown(grpc_grace);
    http.reset();
  }
};

// The generation workers, on the forward workers' memory budget. A CPU the decoder cannot run on
// (FAILED_PRECONDITION) leaves the server without generation rather than without a server.
absl::Status StartGeneration(const ServerConfig& config, const std::shared_ptr<const ReformerModel>& model,
                             Components* c) {
  if (config.generate.workers == 0 || !model->config().is_decoder) {
    c->generation_off = config.generate.workers == 0 ? "it was started with --generate_workers=0"
                                                     : "the model is not causal (is_decoder = false)";
    LOG_INFO("generation off: ", c->generation_off);
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<GenerationService>> generation = GenerationService::Create(
      model, ToGenerationOptions(config), c->inference->memory_budget(), &c->clock, c->metrics.get());
  if (absl::IsFailedPrecondition(generation.status())) {
    c->generation_off = std::string(generation.status().message());
    LOG_WARNING("generation is not available: ", c->generation_off);
    return absl::OkStatus();
  }
  if (!generation.ok()) {
    return absl::Status(generation.status().code(),
                        absl::StrCat("cannot start the generation workers: ", generation.status().message()));
  }
  c->generation = *std::move(generation);
  return absl::OkStatus();
}

// Re-reads the token and TLS files every --credentials_poll_interval_s (rotation without restart).
void StartCredentialPoller(const SecurityConfig& config, Components* c) {
  std::vector<std::function<void()>> polls;
  if (c->credentials.tokens != nullptr) {
    polls.push_back([c] {
      const ReloadResult r = c->credentials.tokens->Poll();
      if (r != ReloadResult::kUnchanged) c->metrics->OnCredentialReload("tokens", ReloadResultName(r));
    });
  }
  if (c->credentials.tls.has_value()) {
    auto expiry = [c](const CertificateInfo& leaf) {
      c->metrics->SetCertificateExpiry(static_cast<double>(absl::ToUnixSeconds(leaf.not_after)));
    };
    expiry(c->credentials.tls->leaf);
    c->tls_reloader = std::make_unique<TlsReloader>(c->credentials.tls_files, &c->clock, *c->credentials.tls,
                                                    [c, expiry](const TlsMaterial& m) {
                                                      absl::Status s = c->grpc->UpdateTls(m);
                                                      if (s.ok()) expiry(m.leaf);
                                                      return s;
                                                    });
    c->credentials.tls->private_key_pem.clear();  // the gRPC credentials hold their own copy
    polls.push_back([c] {
      const ReloadResult r = c->tls_reloader->Poll();
      if (r != ReloadResult::kUnchanged) c->metrics->OnCredentialReload("tls", ReloadResultName(r));
    });
  }
  if (polls.empty()) return;
  c->poller = std::make_unique<CredentialPoller>(absl::Seconds(config.credentials_poll_interval_s), std::move(polls));
}

absl::Status StartComponents(const ServerConfig& config, std::shared_ptr<const ReformerModel> model,
                             const ServedModel& served, Components* c) {
  c->metrics = std::make_unique<ServerMetrics>(&c->registry, ToMetricsOptions(config, served, REFORMER_VERSION));
  absl::StatusOr<std::unique_ptr<InferenceService>> inference =
      InferenceService::Create(model, ToInferenceOptions(config), &c->clock, c->metrics.get());
  if (!inference.ok()) {
    return absl::Status(inference.status().code(),
                        absl::StrCat("cannot start the inference workers: ", inference.status().message()));
  }
  c->inference = *std::move(inference);
  if (absl::Status s = StartGeneration(config, model, c); !s.ok()) return s;
  ServiceEnv env;
  env.inference = c->inference.get();
  env.generation = c->generation.get();
  env.generation_off = c->generation_off.c_str();
  env.model = &served;
  env.health = &c->health;
  env.metrics = c->metrics.get();
  env.clock = &c->clock;
  env.limits = ToServiceLimits(config);
  env.tokens = c->credentials.tokens.get();
  GrpcServerOptions grpc_options = ToGrpcServerOptions(config);
  grpc_options.tls = c->credentials.tls;
  absl::StatusOr<std::unique_ptr<GrpcServer>> grpc = GrpcServer::Start(grpc_options, env, &c->health);
  if (!grpc.ok()) return grpc.status();
  c->grpc = *std::move(grpc);
  absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start(ToHttpOptions(config), &c->registry, env);
  if (!http.ok()) return http.status();
  c->http = *std::move(http);
  StartCredentialPoller(config.security, c);
  // Machine-readable line (tests and scripts read the ports from it when given port 0).
  std::printf("reformer-server listening grpc_port=%d http_port=%d model=%s\n", c->grpc->port(), c->http->port(),
              served.name.c_str());
  std::fflush(stdout);
  LOG_INFO("gRPC on ", config.listen.bind_address, ":", c->grpc->port(), ", HTTP on port ", c->http->port());
  if (config.warmup) {
    const absl::Time warm_start = absl::Now();
    if (absl::Status s = WarmUp(c->inference.get(), served, ToServiceLimits(config)); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("warm-up forward failed: ", s.message()));
    }
    LOG_INFO("warm-up forward took ", absl::FormatDuration(absl::Now() - warm_start));
  }
  return absl::OkStatus();
}

// Waits for SIGTERM/SIGINT, then drains (see the file comment) and stops everything.
void ServeUntilSignal(const ServerConfig& config, const sigset_t& signals, Components* c) {
  c->health.SetReady();
  LOG_INFO("READY");
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LOG_INFO("signal ", signal_number, ": draining (readiness NOT_SERVING, new requests UNAVAILABLE)");
  const absl::Time drain_start = absl::Now();
  c->health.StartDraining();
  c->http->StartDraining();  // responses say Connection: close; idle keep-alives close now
  c->inference->StartDraining();
  if (c->generation) c->generation->StartDraining();
  const absl::Time drain_deadline = drain_start + absl::Seconds(config.shutdown.drain_timeout_s);
  bool idle = c->inference->WaitIdle(drain_deadline - absl::Now());
  if (c->generation) idle = c->generation->WaitIdle(drain_deadline - absl::Now()) && idle;
  LOG_INFO(idle ? "drained: no work left" : "drain timeout: answering what is left");
  if (c->generation) c->generation->Shutdown();
  c->inference->Shutdown();
  const absl::Duration min_drain = absl::Seconds(config.shutdown.drain_min_s);
  if (absl::Now() - drain_start < min_drain) absl::SleepFor(min_drain - (absl::Now() - drain_start));
  c->Stop(absl::Milliseconds(500));
  LOG_INFO("stopped");
}

int Run(int argc, char** argv) {
  EnsurePassiveOpenMpWait(argv);
  // Block the termination signals before any thread exists; the main thread takes them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  FixMallocThresholds();  // before any thread: the idle RSS stays flat (server/config/host.h)
  ServerConfig config;
  if (std::optional<int> exit_code = ParseConfig(argc, argv, &config)) return *exit_code;
  Components components;
  absl::StatusOr<Credentials> credentials = LoadCredentials(config.security, components.clock);
  if (!credentials.ok()) {
    LOG_ERROR(credentials.status().message());
    return 1;
  }
  components.credentials = *std::move(credentials);
  if (absl::Status s = ResolveModelDir(ExecutableDir(), &config); !s.ok()) {
    LOG_ERROR(s.message());
    return 1;
  }
  const absl::Time load_start = absl::Now();
  LoadOptions load_options;
  if (absl::StatusOr<ComputeTypeRequest> type = ParseComputeType(config.model.compute_type); type.ok()) {
    load_options.compute_type = *type;
  } else {
    LOG_ERROR(type.status().message());
    return 1;
  }
  absl::StatusOr<std::shared_ptr<const ReformerModel>> model = ReformerModel::Load(config.model.dir, load_options);
  if (!model.ok()) {
    LOG_ERROR("cannot load model from ", config.model.dir, ": ", model.status().ToString());
    return 1;
  }
  const int cpus = AvailableCpus();
  if (absl::Status s = ResolveServerConfig({(*model)->config().max_position_embeddings, cpus}, &config); !s.ok()) {
    LOG_ERROR("invalid configuration: ", s.message());
    return 2;
  }
  const ServedModel served = Describe(**model, config.model.name, config.batching.max_batch_size);
  LOG_INFO("loaded model '", served.name, "' from ", config.model.dir, " in ",
           absl::FormatDuration(absl::Now() - load_start), ": ", served.config.num_layers(), " layers, hidden ",
           served.config.hidden_size, ", vocab ", served.config.vocab_size, ", context ", served.context(),
           ", rotations from ", served.rotations_source, ", tokenizer ",
           served.tokenizer_name.empty() ? "none" : served.tokenizer_name);
  LOG_INFO(DescribeResolved(config, cpus));

  if (absl::Status s = StartComponents(config, *model, served, &components); !s.ok()) {
    LOG_ERROR(s.message());
    components.Stop(absl::Seconds(2));
    // INVALID_ARGUMENT: flags that cannot work with this model (e.g. step buffers beyond
    // --memory_budget_bytes), a usage error like those ParseConfig finds; else a failure (a busy port).
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  ServeUntilSignal(config, signals, &components);
  return 0;
}

}  // namespace
}  // namespace reformer::serving

int main(int argc, char** argv) { return reformer::serving::Run(argc, argv); }
