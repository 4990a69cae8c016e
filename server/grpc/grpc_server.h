// GrpcServer: the gRPC port — KServe v2 and reformer.v1 services, grpc.health.v1 and server
// reflection — with explicit message-size, keepalive, connection-age and resource settings.
// The port is exclusive (no SO_REUSEPORT): a port already in use is an error at Start, never a
// second server silently sharing it.
//
// Transport: plaintext, or TLS only when `tls` is set (mutual TLS when its client CA is set):
// see grpc_tls.h for how UpdateTls() changes the certificate while the server runs.
//
// Health services: "liveness" SERVING while the process runs; "" and "readiness" SERVING only
// while the HealthState is READY (they follow its transitions at once).
// Owns the services and the grpc::Server; borrows everything in ServiceEnv and `health`.
// Shutdown() (also run by the destructor) cancels what is still open after `grace` and waits for
// every RPC to finish (every reactor finishes on cancellation, streams included); call
// InferenceService::Shutdown() first so that no RPC waits on compute.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/grpc/stream_reactor.h"
#include "server/health/health_state.h"
#include "server/request/served_model.h"
#include "server/security/tls_material.h"

namespace grpc {
class Server;
}

namespace reformer::serving {

class GrpcTlsCredentials;
class KServeService;
class ReformerApiService;

struct GrpcServerOptions {
  std::string address = "0.0.0.0:8001";  // port 0 = pick one (see port())
  int64_t max_receive_message_bytes = 64 << 20;
  int64_t max_send_message_bytes = 512 << 20;
  absl::Duration keepalive_time = absl::Seconds(60);  // zero = gRPC default
  absl::Duration keepalive_timeout = absl::Seconds(20);
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  absl::Duration max_connection_age = absl::Minutes(5);  // zero = never
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  absl::Duration max_connection_idle = absl::ZeroDuration();  // zero = never
  // gRPC resource quota: memory for its transport buffers, and threads (0 = gRPC's default).
  int64_t resource_quota_bytes = int64_t{1} << 30;
  int resource_quota_threads = 0;
  // Concurrent streams (RPCs) per HTTP/2 connection; more wait in the client.
  int max_concurrent_streams = 64;
  // Per ModelStreamInfer call: responses owed and their bytes before reading pauses.
  StreamLimits stream;
  // TLS material (checked by LoadTlsMaterial); nullopt = plaintext.
  std::optional<TlsMaterial> tls;
};

class GrpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options,
                                                           const ServiceEnv& env,
                                                           HealthState* health);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  void Shutdown(absl::Duration grace = absl::Seconds(2));
  // New TLS material for connections made from now on (TlsReloader's apply). FAILED_PRECONDITION
  // on a plaintext server or when it would turn mutual TLS on or off.
  absl::Status UpdateTls(const TlsMaterial& material);

  struct HealthLink;  // shared with the HealthState listener; cut on Shutdown

 private:
  GrpcServer() = default;

  std::unique_ptr<GrpcTlsCredentials> tls_;  // outlives server_ (declared before it)
  std::unique_ptr<KServeService> kserve_;
  std::unique_ptr<ReformerApiService> reformer_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<HealthLink> health_link_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace reformer::serving
