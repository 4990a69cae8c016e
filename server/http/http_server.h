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
// Slow clients. civetweb gives each connection a thread while it reads a request and while it
// waits for the next one on a kept-alive connection; a client that sends half a request holds its
// thread until `request_timeout`, an idle kept-alive connection until `keep_alive_timeout`. The
// default thread count leaves far more threads than a scrape and a few probes need, so dozens of
// slow or idle connections cannot keep /metrics and /readyz from answering.
// Borrows the registry, health state and model; they must outlive the server. The destructor
// stops civetweb and joins its threads.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/registry.h"
#include "server/health/health_state.h"
#include "server/request/served_model.h"

struct mg_context;
struct mg_connection;

namespace reformer::serving {

struct HttpOptions {
  int port = 8000;           // 0 = pick a free port (see port())
  std::string bind_address;  // empty = all interfaces
  int num_threads = 128;     // civetweb worker threads (one per connection being served)
  absl::Duration request_timeout = absl::Seconds(5);     // to receive a whole request
  absl::Duration keep_alive_timeout = absl::Seconds(2);  // idle time of a kept-alive connection
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           prometheus::Registry* registry,
                                                           const HealthState* health,
                                                           const ServedModel* model);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound.
  int port() const { return port_; }

  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  // Routing, separate from civetweb for tests.
  Response Handle(const std::string& method, const std::string& path) const;

 private:
  HttpServer(prometheus::Registry* registry, const HealthState* health, const ServedModel* model)
      : registry_(registry), health_(health), model_(model) {}
  static int HandleRequest(mg_connection* conn, void* self);

  prometheus::Registry* const registry_;
  const HealthState* const health_;
  const ServedModel* const model_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

}  // namespace reformer::serving
