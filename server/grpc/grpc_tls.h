// GrpcTlsCredentials: TLS (or mutual TLS) server credentials for the gRPC port whose certificate,
// key and client CA can be replaced while the server runs, without dropping a call.
//
// gRPC 1.51's one way to change the credentials of a running server is
// grpc::experimental::FileWatcherCertificateProvider: it re-reads files every second and gives
// changed contents to the handshakes that start afterwards (established connections and their
// calls keep the session they have). It checks nothing: a key that does not match its
// certificate, or a half-written file, would fail every new handshake. So it never watches the
// operator's files. It watches two in-memory files this class owns (memfd_create), named
// /proc/self/fd/N:
//   - identity: the certificate chain followed by the private key, in ONE file, so that no read
//     can pair a new key with an old certificate (OpenSSL's PEM readers skip the blocks of the
//     other kind);
//   - client CA bundle (mutual TLS only).
// Update() writes material that LoadTlsMaterial has checked into a fresh memfd and installs it
// under the same descriptor number with dup3, which readers see atomically, with a modification
// time one second past the previous one (gRPC reads a file again when its modification time
// changes while it reads). The key never touches a disk.
//
// New connections see an update within about a second (the provider's refresh interval).
// Thread-safe: Update() may run on the credential poller's thread while gRPC serves.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/security/tls_material.h"

namespace grpc {
class ServerCredentials;
namespace experimental {
class CertificateProviderInterface;
}
}  // namespace grpc

namespace reformer::serving {

class GrpcTlsCredentials {
 public:
  // Client certificates are required and verified against `material.client_ca_pem` when it is
  // not empty. INTERNAL when the memfds cannot be made.
  static absl::StatusOr<std::unique_ptr<GrpcTlsCredentials>> Create(const TlsMaterial& material);
  ~GrpcTlsCredentials();
  GrpcTlsCredentials(const GrpcTlsCredentials&) = delete;
  GrpcTlsCredentials& operator=(const GrpcTlsCredentials&) = delete;

  // For ServerBuilder::AddListeningPort. Keep this object alive as long as the server.
  std::shared_ptr<grpc::ServerCredentials> credentials() const { return credentials_; }
  bool mutual() const { return ca_fd_ >= 0; }

  // Serves `material` to new connections. FAILED_PRECONDITION when it turns mutual TLS on or off
  // (that is fixed at start-up); INTERNAL when the memfd cannot be written.
  absl::Status Update(const TlsMaterial& material);

 private:
  GrpcTlsCredentials() = default;

  absl::Mutex mu_;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // the memfds' modification time, in seconds
  int identity_fd_ = -1;
  int ca_fd_ = -1;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
  std::shared_ptr<grpc::ServerCredentials> credentials_;
};

}  // namespace reformer::serving
