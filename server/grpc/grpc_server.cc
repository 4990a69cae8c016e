#include "server/grpc/grpc_server.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc/grpc_tls.h"
#include "server/grpc/kserve_service.h"
#include "server/grpc/reformer_service.h"

namespace reformer::serving {
namespace {

constexpr char kLiveness[] = "liveness";
constexpr char kReadiness[] = "readiness";

int ClampInt(int64_t v) {
  return static_cast<int>(std::clamp<int64_t>(v, 0, std::numeric_limits<int>::max()));
}
int Millis(absl::Duration d) { return ClampInt(absl::ToInt64Milliseconds(d)); }

}  // namespace

// The HealthState listener outlives nothing: Shutdown() clears `service` under the lock.
struct GrpcServer::HealthLink {
  absl::Mutex mu;
  grpc::HealthCheckServiceInterface* service ABSL_GUARDED_BY(mu) = nullptr;

  void Set(bool ready) {
    absl::MutexLock lock(&mu);
    if (service == nullptr) return;
    service->SetServingStatus("", ready);
    service->SetServingStatus(kReadiness, ready);
  }
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options,
                                                              const ServiceEnv& env,
                                                              HealthState* health) {
  std::unique_ptr<GrpcServer> s(new GrpcServer());
  s->kserve_ = std::make_unique<KServeService>(env, options.stream);
  s->reformer_ = std::make_unique<ReformerApiService>(env);

  // gRPC's built-in health service does not put grpc.health.v1 into the protobuf descriptor
  // pool; touching the generated descriptor does, so reflection clients (buf curl, grpcurl) can
  // call grpc.health.v1.Health/Check too.
  grpc::health::v1::HealthCheckRequest::descriptor();
  // Process-wide switches of gRPC (idempotent): default health service, reflection plugin.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (options.tls.has_value()) {
    absl::StatusOr<std::unique_ptr<GrpcTlsCredentials>> tls = GrpcTlsCredentials::Create(*options.tls);
    if (!tls.ok()) return tls.status();
    s->tls_ = *std::move(tls);
    credentials = s->tls_->credentials();
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, credentials, &s->port_);
  builder.RegisterService(s->kserve_.get());
  builder.RegisterService(s->reformer_.get());
  builder.SetMaxReceiveMessageSize(ClampInt(options.max_receive_message_bytes));
  builder.SetMaxSendMessageSize(ClampInt(options.max_send_message_bytes));
  if (options.keepalive_time > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options.keepalive_time));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Millis(options.keepalive_timeout));
  }
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a busy port is an error
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             std::max(1, options.max_concurrent_streams));
  grpc::ResourceQuota quota("reformer-server");
  quota.Resize(static_cast<size_t>(std::max<int64_t>(options.resource_quota_bytes, 1 << 20)));
  if (options.resource_quota_threads > 0) quota.SetMaxThreads(options.resource_quota_threads);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Millis(options.min_client_ping_interval));
  if (options.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Millis(options.max_connection_age));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               Millis(options.max_connection_age_grace));
  }
  if (options.max_connection_idle > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               Millis(options.max_connection_idle));
  }
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", options.address, " (port in use?)"));
  }
  grpc::HealthCheckServiceInterface* service = s->server_->GetHealthCheckService();
  s->health_link_ = std::make_shared<HealthLink>();
  {
    absl::MutexLock lock(&s->health_link_->mu);
    s->health_link_->service = service;
  }
  service->SetServingStatus(kLiveness, true);
  s->health_link_->Set(health->ready());
  std::shared_ptr<HealthLink> link = s->health_link_;
  health->AddListener([link](ServingState state) { link->Set(state == ServingState::kReady); });
  return s;
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  {
    absl::MutexLock lock(&health_link_->mu);
    health_link_->service = nullptr;
  }
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
  server_->Wait();
}

absl::Status GrpcServer::UpdateTls(const TlsMaterial& material) {
  if (tls_ == nullptr) return absl::FailedPreconditionError("the gRPC port is plaintext");
  return tls_->Update(material);
}

GrpcServer::~GrpcServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace reformer::serving
