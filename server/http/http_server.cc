#include "server/http/http_server.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/health/health_state.h"
#include "server/http/json_writer.h"
#include "server/http/rest_model_info.h"
#include "server/metrics/server_metrics.h"
#include "server/request/exception_status.h"
#include "server/request/validate.h"
#include "server/security/token_store.h"

namespace reformer::serving {
namespace {

constexpr char kJson[] = "application/json";
constexpr char kText[] = "text/plain; charset=utf-8";

HttpServer::Response JsonErrorResponse(int status, absl::string_view message) {
  return {status, kJson, JsonErrorBody(message), {}};
}

HttpServer::Response MethodNotAllowed(const char* allow) {
  HttpServer::Response r = JsonErrorResponse(405, absl::StrCat("this endpoint takes ", allow));
  r.headers.push_back({"Allow", allow});
  return r;
}

// The GET/HEAD endpoints outside a model (see the table in http_server.h).
bool IsServerGetPath(absl::string_view path) {
  return path == "/metrics" || path == "/healthz" || path == "/readyz" ||
         path == "/v2/health/live" || path == "/v2/health/ready" || path == "/v2" ||
         path == "/v2/" || path == "/v2/models/stats";
}

bool IsModelGetAction(absl::string_view action) {
  return action.empty() || action == "ready" || action == "config" || action == "stats";
}

// Served to anyone, whatever --http_api and the tokens say: probes and the Prometheus scrape.
bool IsOpenPath(absl::string_view path) {
  return path == "/metrics" || path == "/healthz" || path == "/readyz" ||
         path == "/v2/health/live" || path == "/v2/health/ready";
}

// The status a refusal counts as in reformer_requests_total (gRPC's code for the same refusal).
absl::StatusCode RefusalCode(int http_status) {
  return http_status == 401 ? absl::StatusCode::kUnauthenticated
                            : absl::StatusCode::kPermissionDenied;
}

int ThreadsForInference(const HttpOptions& o) {
  const int threads = std::max(1, o.num_threads);
  const int infer = o.infer_threads > 0 ? o.infer_threads : threads * 3 / 4;
  return std::clamp(infer, 1, threads);
}

}  // namespace

HttpServer::HttpServer(const HttpOptions& options, prometheus::Registry* registry,
                       const ServiceEnv& env)
    : api_(options.api),
      registry_(registry),
      env_(env),
      shutdown_grace_(options.shutdown_grace),
      rest_(options.rest),
      slots_(ThreadsForInference(options)),
      infer_(env, options.rest, &slots_),
      generate_(env, options.rest, &slots_),
      write_stall_(options.request_timeout) {}

// The POST endpoints under a model, by action.
void HttpServer::RegisterModelPostHandlers() {
  post_handlers_["infer"] = {kRestInferMethod, [this](HttpExchange* exchange, const ModelPath& path,
                                                      const std::string& tenant) {
                               return infer_.Handle(exchange, path, tenant);
                             }};
  post_handlers_["generate"] = {kRestGenerateMethod, [this](HttpExchange* exchange, const ModelPath& path,
                                                            const std::string& tenant) {
                                  return generate_.Handle(exchange, path, tenant, /*stream=*/false);
                                }};
  post_handlers_["generate_stream"] = {
      kRestGenerateStreamMethod,
      [this](HttpExchange* exchange, const ModelPath& path, const std::string& tenant) {
        return generate_.Handle(exchange, path, tenant, /*stream=*/true);
      }};
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              prometheus::Registry* registry,
                                                              const ServiceEnv& env) {
  std::unique_ptr<HttpServer> server(new HttpServer(options, registry, env));
  server->RegisterModelPostHandlers();
  HttpFrontOptions front;
  front.bind_address = options.bind_address;
  front.port = options.port;
  front.handler_threads = std::max(1, options.num_threads);
  front.probe_threads = std::max(1, options.probe_threads);
  front.max_connections = options.max_connections;
  front.max_connections_per_client = options.max_connections_per_client;
  front.max_head_bytes = static_cast<size_t>(options.max_head_bytes);
  front.head_timeout = options.request_timeout;
  front.keep_alive_timeout = options.keep_alive_timeout;
  HttpServer* self = server.get();
  absl::StatusOr<std::unique_ptr<HttpFront>> started = HttpFront::Start(
      front, env.clock,
      [self](HttpConnection* conn, const HttpRequestHead& head) { return self->Serve(conn, head); },
      [](const HttpRequestHead& head) {
        return (head.method == "GET" || head.method == "HEAD") && !head.has_body();
      },
      [metrics = env.metrics](const char* limit) {
        if (metrics != nullptr) metrics->OnHttpConnectionEvicted(limit);
      });
  if (!started.ok()) return started.status();
  server->front_ = *std::move(started);
  server->port_ = server->front_->port();
  return server;
}

void HttpServer::StartDraining() {
  draining_.store(true);
  if (front_ != nullptr) front_->StartDraining();
}

HttpServer::~HttpServer() {
  if (front_ == nullptr) return;
  // Answers being written (a long JSON, a large binary output) go out before the front cuts the
  // connections; new REST inferences meanwhile get 503 (draining) and hold a slot only briefly.
  slots_.WaitIdle(shutdown_grace_);
  front_->Stop();
}

std::optional<HttpServer::Response> HttpServer::Admit(
    absl::string_view path, std::optional<absl::string_view> authorization,
    std::string* tenant) const {
  *tenant = kAnonymousTenant;
  if (IsOpenPath(path)) return std::nullopt;
  if (!api_) {
    return JsonErrorResponse(
        403,
        "the REST API is not served on this plaintext port (the gRPC port uses TLS; "
        "--http_api on turns it on); this port serves /metrics, /healthz and /readyz");
  }
  if (env_.tokens == nullptr) return std::nullopt;
  absl::StatusOr<std::string> caller = env_.tokens->Authenticate(authorization);
  if (caller.ok()) {
    *tenant = *std::move(caller);
    return std::nullopt;
  }
  Response r = JsonErrorResponse(401, caller.status().message());
  // RFC 6750: no error code when no credentials were sent, invalid_token otherwise.
  r.headers.push_back(
      {"WWW-Authenticate", authorization.has_value()
                               ? "Bearer realm=\"reformer-serve\", error=\"invalid_token\""
                               : "Bearer realm=\"reformer-serve\""});
  return r;
}

bool HttpServer::Serve(HttpConnection* conn, const HttpRequestHead& head) {
  HttpExchange exchange(conn, head, write_stall_);
  if (draining_.load()) exchange.CloseAfterResponse();
  try {
    Dispatch(&exchange);
  } catch (...) {  // nothing may leave a handler thread
    try {
      const absl::Status status = CurrentExceptionStatus("answering an HTTP request");
      if (!exchange.head_sent()) {
        const Response r = JsonErrorResponse(500, status.message());
        exchange.Send(r.status, r.content_type, r.body, r.headers, /*close=*/true);
      }
    } catch (...) {
    }
    return false;
  }
  return exchange.Reusable();
}

int HttpServer::Dispatch(HttpExchange* exchange) {
  const std::string method(exchange->method());
  const std::string path(exchange->path());
  std::string tenant;
  if (std::optional<Response> refused = Admit(path, exchange->Header("Authorization"), &tenant)) {
    return Refuse(exchange, *refused);
  }
  if (method == "POST") {
    const std::optional<ModelPath> model_path = ParseModelPath(path);
    const auto handler =
        model_path ? post_handlers_.find(model_path->action) : post_handlers_.end();
    if (handler != post_handlers_.end()) {
      if (env_.inference == nullptr) {
        SendJsonError(exchange, 503, "this server runs no inference service");
        return 503;
      }
      return handler->second.handle(exchange, *model_path, tenant);
    }
  }
  const Response r = Handle(method, path);
  exchange->Send(r.status, r.content_type, r.body, r.headers);
  // A body nobody reads (POST to a GET endpoint): drained a bounded while, so that the client
  // reads the answer before the connection closes.
  exchange->DiscardBody(rest_.discard_bytes, env_.clock->Now() + rest_.discard_timeout, *env_.clock);
  return r.status;
}

int HttpServer::Refuse(HttpExchange* exchange, const Response& refusal) {
  const Clock& clock = *env_.clock;
  const absl::Time start = clock.Now();
  // Nothing of the body is read; a client sending one anyway can still read the answer.
  const bool unread = exchange->method() == "POST" && exchange->content_length() != 0;
  exchange->Send(refusal.status, refusal.content_type, refusal.body, refusal.headers,
                 /*close=*/unread);
  if (unread) exchange->DiscardBody(rest_.discard_bytes, start + rest_.discard_timeout, clock);
  const std::optional<ModelPath> model_path = ParseModelPath(exchange->path());
  const auto post = exchange->method() == "POST" && model_path
                        ? post_handlers_.find(model_path->action)
                        : post_handlers_.end();
  if (post != post_handlers_.end() && env_.metrics != nullptr) {
    env_.metrics->RequestFinished(
        post->second.metrics_method, kAnonymousTenant, RefusalCode(refusal.status),
        absl::ToDoubleSeconds(clock.Now() - start), 0, 0, absl::ToUnixMillis(absl::Now()));
  }
  return refusal.status;
}

HttpServer::Response HttpServer::Handle(const std::string& method, const std::string& path) const {
  const std::optional<ModelPath> model_path = ParseModelPath(path);
  if (model_path && post_handlers_.count(model_path->action) > 0) {
    return MethodNotAllowed("POST");
  }
  if (!IsServerGetPath(path) && !(model_path && IsModelGetAction(model_path->action))) {
    return JsonErrorResponse(404, absl::StrCat("no such endpoint: ", path));
  }
  if (method != "GET" && method != "HEAD") return MethodNotAllowed("GET, HEAD");
  if (path == "/metrics") {
    prometheus::TextSerializer serializer;
    return {200,
            "text/plain; version=0.0.4; charset=utf-8",
            serializer.Serialize(registry_->Collect()),
            {}};
  }
  if (path == "/healthz" || path == "/v2/health/live") return {200, kText, "ok\n", {}};
  if (path == "/readyz" || path == "/v2/health/ready") {
    return {env_.health->ready() ? 200 : 503,
            kText,
            absl::StrCat(ServingStateName(env_.health->state()), "\n"),
            {}};
  }
  if (path == "/v2" || path == "/v2/") return {200, kJson, ServerMetadataJson(), {}};
  if (path == "/v2/models/stats") {
    const ModelStatsSnapshot stats =
        env_.metrics != nullptr ? env_.metrics->Snapshot() : ModelStatsSnapshot{};
    return {200, kJson, ModelStatsJson(*env_.model, stats), {}};
  }
  return HandleModel(*model_path);
}

HttpServer::Response HttpServer::HandleModel(const ModelPath& path) const {
  const ServedModel& m = *env_.model;
  const absl::Status found = CheckModel(m, path.name, path.version);
  if (!found.ok()) return JsonErrorResponse(404, found.message());
  if (path.action.empty()) return {200, kJson, ModelMetadataJson(m, env_.limits), {}};
  if (path.action == "ready") {
    return {env_.health->ready() ? 200 : 503,
            kText,
            absl::StrCat(ServingStateName(env_.health->state()), "\n"),
            {}};
  }
  if (path.action == "config") return {200, kJson, ModelConfigJson(m), {}};
  if (path.action == "stats") {
    const ModelStatsSnapshot stats =
        env_.metrics != nullptr ? env_.metrics->Snapshot() : ModelStatsSnapshot{};
    return {200, kJson, ModelStatsJson(m, stats), {}};
  }
  return JsonErrorResponse(404, absl::StrCat("no such endpoint: ", path.action));
}

}  // namespace reformer::serving
