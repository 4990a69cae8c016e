#include "server/http/http_server.h"

#include <civetweb.h>

#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"
#include "server/request/model_signature.h"
#include "server/security/token_store.h"

namespace reformer::serving {
namespace {

constexpr char kJson[] = "application/json";

nlohmann::json Tensors(const std::vector<TensorSpec>& tensors) {
  nlohmann::json list = nlohmann::json::array();
  for (const TensorSpec& t : tensors) {
    list.push_back({{"name", t.name}, {"datatype", DataTypeName(t.datatype)}, {"shape", t.shape}});
  }
  return list;
}

HttpServer::Response JsonError(int status, const std::string& message) {
  return {status, kJson, nlohmann::json{{"error", message}}.dump(), {}};
}

// Served to anyone, whatever --http_api and the tokens say: probes and the Prometheus scrape.
bool IsOpenPath(absl::string_view path) {
  return path == "/metrics" || path == "/healthz" || path == "/readyz" || path == "/v2/health/live" ||
         path == "/v2/health/ready";
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              prometheus::Registry* registry,
                                                              const ServiceEnv& env) {
  std::unique_ptr<HttpServer> server(new HttpServer(options, registry, env));
  const std::string ports = options.bind_address.empty()
                                ? std::to_string(options.port)
                                : absl::StrCat(options.bind_address, ":", options.port);
  const std::string threads = std::to_string(std::max(1, options.num_threads));
  const std::string request_ms =
      std::to_string(std::max<int64_t>(1, absl::ToInt64Milliseconds(options.request_timeout)));
  const std::string keep_alive_ms =
      std::to_string(std::max<int64_t>(1, absl::ToInt64Milliseconds(options.keep_alive_timeout)));
  const char* civet_options[] = {"listening_ports",
                                 ports.c_str(),
                                 "num_threads",
                                 threads.c_str(),
                                 "enable_keep_alive",
                                 "yes",
                                 "request_timeout_ms",
                                 request_ms.c_str(),
                                 "keep_alive_timeout_ms",
                                 keep_alive_ms.c_str(),
                                 nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  server->ctx_ = mg_start(&callbacks, nullptr, civet_options);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot start the HTTP server on port ", ports, " (port in use?)"));
  }
  mg_set_request_handler(server->ctx_, "/", &HttpServer::HandleRequest, server.get());
  mg_server_port bound[4];
  const int n = mg_get_server_ports(server->ctx_, 4, bound);
  if (n <= 0) return absl::InternalError("civetweb reports no listening port");
  server->port_ = bound[0].port;
  return server;
}

HttpServer::~HttpServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

std::optional<HttpServer::Response> HttpServer::Admit(absl::string_view path,
                                                     std::optional<absl::string_view> authorization,
                                                     std::string* tenant) const {
  *tenant = kAnonymousTenant;
  if (IsOpenPath(path)) return std::nullopt;
  if (!api_) {
    return JsonError(403,
                     "the REST API is not served on this plaintext port (the gRPC port uses TLS; "
                     "--http_api on turns it on); this port serves /metrics, /healthz and /readyz");
  }
  if (tokens_ == nullptr) return std::nullopt;
  absl::StatusOr<std::string> caller = tokens_->Authenticate(authorization);
  if (caller.ok()) {
    *tenant = *std::move(caller);
    return std::nullopt;
  }
  Response r = JsonError(401, std::string(caller.status().message()));
  // RFC 6750: no error code when no credentials were sent, invalid_token otherwise.
  r.headers.push_back({"WWW-Authenticate", authorization.has_value()
                                               ? "Bearer realm=\"reformer-serve\", error=\"invalid_token\""
                                               : "Bearer realm=\"reformer-serve\""});
  return r;
}

int HttpServer::HandleRequest(mg_connection* conn, void* self) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string method = info->request_method != nullptr ? info->request_method : "";
  const std::string path = info->local_uri != nullptr ? info->local_uri : "/";
  const HttpServer* server = static_cast<const HttpServer*>(self);
  const char* authorization = mg_get_header(conn, "Authorization");
  std::string tenant;
  std::optional<Response> refused = server->Admit(
      path, authorization != nullptr ? std::optional<absl::string_view>(authorization) : std::nullopt, &tenant);
  const Response r = refused.has_value() ? *std::move(refused) : server->Handle(method, path);
  std::string head = absl::StrCat("HTTP/1.1 ", r.status, " ", mg_get_response_code_text(conn, r.status),
                                  "\r\nContent-Type: ", r.content_type, "\r\nContent-Length: ", r.body.size(),
                                  "\r\nCache-Control: no-store\r\n");
  for (const HttpHeader& h : r.headers) absl::StrAppend(&head, h.name, ": ", h.value, "\r\n");
  head += "\r\n";
  mg_write(conn, head.data(), head.size());
  if (method != "HEAD") mg_write(conn, r.body.data(), r.body.size());
  return r.status;
}

HttpServer::Response HttpServer::Handle(const std::string& method, const std::string& path) const {
  if (method != "GET" && method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "only GET and HEAD are supported\n", {}};
  }
  if (path == "/metrics") {
    prometheus::TextSerializer serializer;
    return {200, "text/plain; version=0.0.4; charset=utf-8",
            serializer.Serialize(registry_->Collect()), {}};
  }
  if (path == "/healthz" || path == "/v2/health/live") {
    return {200, "text/plain; charset=utf-8", "ok\n", {}};
  }
  const bool ready = health_->ready();
  const std::string state = ServingStateName(health_->state());
  if (path == "/readyz" || path == "/v2/health/ready") {
    return {ready ? 200 : 503, "text/plain; charset=utf-8", absl::StrCat(state, "\n"), {}};
  }
  if (path == "/v2" || path == "/v2/") {
    nlohmann::json j = {{"name", "reformer-server"},
                        {"version", "0.1.0"},
                        {"extensions", {"parameters", "statistics", "model_configuration"}}};
    return {200, kJson, j.dump(), {}};
  }
  const std::string prefix = "/v2/models/";
  if (absl::StartsWith(path, prefix)) {
    std::string rest = path.substr(prefix.size());
    bool want_ready = false;
    if (absl::EndsWith(rest, "/ready")) {
      want_ready = true;
      rest.resize(rest.size() - std::strlen("/ready"));
    }
    // Optional /versions/{v}.
    std::string version;
    const size_t v = rest.find("/versions/");
    if (v != std::string::npos) {
      version = rest.substr(v + std::strlen("/versions/"));
      rest.resize(v);
    }
    if (rest != model_->name || (!version.empty() && version != model_->version)) {
      return JsonError(
          404, absl::StrCat("model '", rest, version.empty() ? "" : " version ", version,
                            "' is not served here; this server serves '", model_->name, "'"));
    }
    if (want_ready) {
      return {ready ? 200 : 503, "text/plain; charset=utf-8", absl::StrCat(state, "\n"), {}};
    }
    const ServedModel& m = *model_;
    const ModelSignature sig = SignatureOf(m);
    nlohmann::json j = {{"name", m.name},
                        {"versions", {m.version}},
                        {"platform", m.platform},
                        {"inputs", Tensors(sig.inputs)},
                        {"outputs", Tensors(sig.outputs)}};
    return {200, kJson, j.dump(), {}};
  }
  return {404, "text/plain; charset=utf-8", absl::StrCat("no such endpoint: ", path, "\n"), {}};
}

}  // namespace reformer::serving
