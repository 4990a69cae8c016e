// HttpServer: the HTTP port (our HTTP/1.1 front, http_front.h): Prometheus scrape, Kubernetes probes, and the KServe v2 /
// Open Inference Protocol REST API with Triton's extras.
//
//   GET  /metrics                         Prometheus text format of the server's registry
//   GET  /healthz, /v2/health/live        200 while the process runs
//   GET  /readyz, /v2/health/ready        200 when loaded, warmed up and not draining; else 503
//   GET  /v2                              server metadata (JSON)
//   GET  /v2/models/{name}[/versions/{v}]          model metadata; 404 for another name/version
//   GET  /v2/models/{name}[/versions/{v}]/ready    200 / 503
//   GET  /v2/models/{name}[/versions/{v}]/config   Triton model configuration
//   GET  /v2/models[/{name}[/versions/{v}]]/stats  Triton model statistics
//   POST /v2/models/{name}[/versions/{v}]/infer    inference, JSON and binary (rest_infer.h)
//   POST /v2/models/{name}[/versions/{v}]/generate[_stream]  Triton's generate extension
//                                                  (rest_generate.h)
// Other paths 404 (JSON {"error": ...}, as every REST error), other methods on these paths 405 (with
// Allow); malformed requests get the front's precise status (http_request_head.h). Everything about the model comes from the
// structures the gRPC services read (rest_model_info.h), so the two APIs say the same.
//
// Access (Admit, before any routing). The port is plaintext (no HTTPS: see deploy/README.md, "TLS
// and authentication"). Open to everyone:
// /metrics, /healthz, /readyz, /v2/health/live, /v2/health/ready. Every other path:
//   - 403 when the API is off (HttpOptions::api; --http_api auto turns it off when the gRPC port
//     uses TLS, so that no request or model data crosses the network in the clear);
//   - 401 with `WWW-Authenticate: Bearer` unless it carries `Authorization: Bearer <token>` valid
//     in ServiceEnv::tokens (the store the gRPC services use), when tokens are configured.
// Deny by default: an endpoint added to the API (generation, more POST endpoints) is covered
// without a line of its own. A refused request is answered before its body is read (a client
// that sends one anyway gets the answer with Connection: close after a bounded drain, as for
// every early REST answer); a refused POST endpoint counts in reformer_requests_total with its
// method label and tenant "anonymous". An admitted POST endpoint receives the caller's tenant.
//
// POST endpoints under a model are looked up by their last path segment in one table
// (RegisterModelPostHandlers in http_server.cc), each with its method label; an endpoint that
// reads a body and streams an answer (generation, Server-Sent Events) adds a line there and uses
// HttpExchange's helpers.
//
// Threads. The front's event loop holds every connection that waits for a request head or idles
// between kept-alive requests (no thread; limits on connections, per client, head size and time).
// A complete request runs on a pool: bodiless GET/HEAD (probes, /metrics, metadata) on
// `probe_threads`, everything else on `num_threads`, so probes never queue behind uploads. A REST
// inference holds its thread while the engine works, so at most `infer_threads` threads may wait on
// computation at once (ComputeSlots; beyond that: 503 at once).
// Borrows everything in ServiceEnv (health, model, metrics, tokens) and the registry; they must
// outlive the server. The destructor first lets the computing handlers finish writing their
// answers (up to `shutdown_grace`: the InferenceService's Shutdown, which comes first, has
// answered every one of them), then stops the front (idle connections closed at once, connections
// still in a handler cut) and joins its threads.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "prometheus/registry.h"
#include "server/http/compute_slots.h"
#include "server/http/http_exchange.h"
#include "server/http/http_front.h"
#include "server/http/model_path.h"
#include "server/http/rest_generate.h"
#include "server/http/rest_infer.h"
#include "server/request/served_model.h"

namespace reformer::serving {

struct HttpOptions {
  int port = 8000;           // 0 = pick a free port (see port())
  bool api = true;           // the REST API beyond probes and /metrics (see Access above)
  std::string bind_address;  // empty = all interfaces
  int num_threads = 128;     // threads serving requests with bodies (REST inference, generation)
  int probe_threads = 4;     // threads serving bodiless GET/HEAD (probes, /metrics, metadata)
  // Open at once, and from one client address; a connection beyond either evicts the oldest idle
  // one, or gets 503 and close when every one is busy (http_front.h).
  int max_connections = 4096;
  int max_connections_per_client = 256;
  int max_head_bytes = 16 << 10;         // a request head (more: 431)
  // Most threads waiting on computation at once; 0 = 3/4 of num_threads (at least 1).
  int infer_threads = 0;
  // To receive a request's head; also the longest a response write may make no progress.
  absl::Duration request_timeout = absl::Seconds(5);
  absl::Duration keep_alive_timeout = absl::Seconds(2);  // idle time of a kept-alive connection
  RestInferOptions rest;  // body limit and timeouts of REST inference
  // On destruction, how long computing handlers may take to finish writing their answers before
  // the front is stopped (which cuts any write still going on).
  absl::Duration shutdown_grace = absl::Seconds(5);
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
  // SIGTERM: every response from now on says Connection: close and its connection closes after
  // it; idle kept-alive connections close at once (HttpFront::StartDraining). Thread-safe,
  // idempotent.
  void StartDraining();
  int infer_threads() const { return slots_.capacity(); }

  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<HttpHeader> headers;
  };
  // Access control (see the file comment): nullopt when the request may proceed, with `*tenant`
  // set to the caller's tenant (kAnonymousTenant without tokens); else the 401/403 answer.
  // `authorization`: the Authorization header, nullopt when absent.
  std::optional<Response> Admit(absl::string_view path,
                                std::optional<absl::string_view> authorization,
                                std::string* tenant) const;
  // The GET/HEAD routes (everything but the POST endpoints) of an admitted request, separate
  // from the connection for tests.
  Response Handle(const std::string& method, const std::string& path) const;

  // A POST endpoint under /v2/models/{name}[/versions/{v}]/{action}: answers the exchange
  // completely and returns the HTTP status sent. `tenant`: the caller, from Admit.
  using ModelPostHandler =
      std::function<int(HttpExchange*, const ModelPath&, const std::string& tenant)>;

 private:
  // A POST endpoint's entry in the table: its handler and the method label its requests carry
  // in reformer_requests_total (also when Admit refuses them).
  struct ModelPost {
    const char* metrics_method;
    ModelPostHandler handle;
  };

  HttpServer(const HttpOptions& options, prometheus::Registry* registry, const ServiceEnv& env);
  void RegisterModelPostHandlers();
  // Serves one request of the front; true when the connection may carry another.
  bool Serve(HttpConnection* conn, const HttpRequestHead& head);
  int Dispatch(HttpExchange* exchange);
  // Sends Admit's refusal (see Access above) and counts a refused POST endpoint.
  int Refuse(HttpExchange* exchange, const Response& refusal);
  Response HandleModel(const ModelPath& path) const;

  const bool api_;
  prometheus::Registry* const registry_;
  const ServiceEnv env_;  // env_.tokens nullptr = no tokens required
  const absl::Duration shutdown_grace_;
  const RestInferOptions rest_;
  ComputeSlots slots_;
  const RestInferHandler infer_;
  const RestGenerateHandler generate_;
  std::map<std::string, ModelPost> post_handlers_;  // by action; filled before start
  const absl::Duration write_stall_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<HttpFront> front_;
  int port_ = 0;
};

}  // namespace reformer::serving
