// HttpServer: the HTTP side port (civetweb): Prometheus scrape, Kubernetes probes and the KServe v2
// REST read-only endpoints.
//
//   GET /metrics                  Prometheus text format of the server's registry
//   GET /healthz, /v2/health/live 200 while the process runs
//   GET /readyz, /v2/health/ready 200 when the model is loaded, warmed up and the server is not
//                                 draining; 503 otherwise (body names the state)
//   GET /v2                       server metadata (JSON)
//   GET /v2/models/{name}         model metadata (JSON); 404 for another name
//   GET /v2/models/{name}/ready   200 / 503; 404 for another name
// Other paths 404, other methods 405. Tensors come from the model signature
// (server/request/model_signature.h), the same one ModelMetadata reads.
//
// Access (Admit, before any routing). The port is plaintext (civetweb 1.15 as Debian builds it
// cannot serve HTTPS: see deploy/README.md, "TLS and authentication"). Open to everyone:
// /metrics, /healthz, /readyz, /v2/health/live, /v2/health/ready. Every other path:
//   - 403 when the API is off (HttpOptions::api; --http_api auto turns it off when the gRPC port
//     uses TLS, so that no request or model data crosses the network in the clear);
//   - 401 with `WWW-Authenticate: Bearer` unless it carries `Authorization: Bearer <token>` valid
//     in ServiceEnv::tokens (the store the gRPC services use), when tokens are configured.
// Deny by default: an endpoint added to the API (REST inference, generation) is covered without a
// line of its own; its handler takes the caller's tenant from Admit.
//
// Slow clients. civetweb gives each connection a thread while it reads a request and while it
// waits for the next one on a kept-alive connection; a client that sends half a request holds its
// thread until `request_timeout`, an idle kept-alive connection until `keep_alive_timeout`. The
// default thread count leaves far more threads than a scrape and a few probes need, so dozens of
// slow or idle connections cannot keep /metrics and /readyz from answering.
// Borrows the registry, health state and model; they must outlive the server. The destructor
// stops civetweb and joins its threads.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "prometheus/registry.h"
#include "server/health/health_state.h"
#include "server/request/served_model.h"

struct mg_context;
struct mg_connection;

namespace reformer::serving {

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpOptions {
  int port = 8000;           // 0 = pick a free port (see port())
  bool api = true;           // the REST API beyond probes and /metrics (see Access above)
  std::string bind_address;  // empty = all interfaces
  int num_threads = 128;     // civetweb worker threads (one per connection being served)
  absl::Duration request_timeout = absl::Seconds(5);     // to receive a whole request
  absl::Duration keep_alive_timeout = absl::Seconds(2);  // idle time of a kept-alive connection
};

class HttpServer {
 public:
  // Borrows the registry and everything in `env` (health, model, tokens).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           prometheus::Registry* registry,
                                                           const ServiceEnv& env);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound.
  int port() const { return port_; }

  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<HttpHeader> headers;
  };
  // Access control (see the file comment): nullopt when the request may proceed, with `*tenant`
  // set to the caller's tenant (kAnonymousTenant without tokens); else the 401/403 answer.
  // `authorization`: the Authorization header, nullopt when absent.
  std::optional<Response> Admit(absl::string_view path, std::optional<absl::string_view> authorization,
                                std::string* tenant) const;
  // Routing, separate from civetweb for tests.
  Response Handle(const std::string& method, const std::string& path) const;

 private:
  HttpServer(const HttpOptions& options, prometheus::Registry* registry, const ServiceEnv& env)
      : api_(options.api), registry_(registry), health_(env.health), model_(env.model), tokens_(env.tokens) {}
  static int HandleRequest(mg_connection* conn, void* self);

  const bool api_;
  prometheus::Registry* const registry_;
  const HealthState* const health_;
  const ServedModel* const model_;
  const TokenStore* const tokens_;  // nullptr = no tokens required
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

}  // namespace reformer::serving
