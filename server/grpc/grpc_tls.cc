#include "server/grpc/grpc_tls.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace reformer::serving {
namespace {

// gRPC's FileWatcherCertificateProvider re-reads its files this often (seconds).
constexpr unsigned int kRefreshSeconds = 1;

// A new memfd holding `data`, its modification time `mtime` seconds after the epoch;
// -1 and errno on failure.
int NewMemfd(const std::string& data, int64_t mtime) {
  const int fd = memfd_create("reformer-tls", MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  const struct timespec times[2] = {{static_cast<time_t>(mtime), 0},
                                    {static_cast<time_t>(mtime), 0}};
  if (futimens(fd, times) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

absl::Status Errno(const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Puts `data` behind descriptor `target` (a new one when target < 0); returns it.
absl::StatusOr<int> Install(const std::string& data, int64_t mtime, int target) {
  const int fd = NewMemfd(data, mtime);
  if (fd < 0) return Errno("cannot create an in-memory file for the TLS credentials");
  if (target < 0) return fd;
  if (dup3(fd, target, O_CLOEXEC) < 0) {
    const absl::Status s = Errno("cannot install the new TLS credentials");
    close(fd);
    return s;
  }
  close(fd);
  return target;
}

std::string FdPath(int fd) { return absl::StrCat("/proc/self/fd/", fd); }

std::string Identity(const TlsMaterial& m) {
  return absl::StrCat(m.cert_chain_pem, m.private_key_pem);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcTlsCredentials>> GrpcTlsCredentials::Create(
    const TlsMaterial& material) {
  std::unique_ptr<GrpcTlsCredentials> c(new GrpcTlsCredentials());
  absl::MutexLock lock(&c->mu_);
  c->generation_ = 1;
  absl::StatusOr<int> identity = Install(Identity(material), c->generation_, -1);
  if (!identity.ok()) return identity.status();
  c->identity_fd_ = *identity;
  std::string ca_path;
  if (!material.client_ca_pem.empty()) {
    absl::StatusOr<int> ca = Install(material.client_ca_pem, c->generation_, -1);
    if (!ca.ok()) return ca.status();
    c->ca_fd_ = *ca;
    ca_path = FdPath(c->ca_fd_);
  }
  const std::string identity_path = FdPath(c->identity_fd_);
  if (access(identity_path.c_str(), R_OK) != 0) {  // gRPC reads it by this name
    return Errno("cannot read the in-memory TLS credentials through /proc/self/fd (is /proc mounted?)");
  }
  c->provider_ = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      identity_path, identity_path, ca_path, kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(c->provider_);
  options.watch_identity_key_cert_pairs();
  if (c->ca_fd_ >= 0) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  c->credentials_ = grpc::experimental::TlsServerCredentials(options);
  if (c->credentials_ == nullptr)
    return absl::InternalError("gRPC refused the TLS server credentials");
  return c;
}

GrpcTlsCredentials::~GrpcTlsCredentials() {
  credentials_.reset();
  provider_.reset();  // joins the provider's refresh thread (when gRPC holds no other reference)
  if (identity_fd_ >= 0) close(identity_fd_);
  if (ca_fd_ >= 0) close(ca_fd_);
}

absl::Status GrpcTlsCredentials::Update(const TlsMaterial& material) {
  if (material.client_ca_pem.empty() == mutual()) {
    return absl::FailedPreconditionError(
        "mutual TLS cannot be turned on or off while the server runs");
  }
  absl::MutexLock lock(&mu_);
  const int64_t generation = generation_ + 1;
  // The CA first: a client certificate from the new CA is then accepted no later than the new
  // server certificate is shown.
  if (mutual()) {
    absl::StatusOr<int> ca = Install(material.client_ca_pem, generation, ca_fd_);
    if (!ca.ok()) return ca.status();
  }
  absl::StatusOr<int> identity = Install(Identity(material), generation, identity_fd_);
  if (!identity.ok()) return identity.status();
  generation_ = generation;
  return absl::OkStatus();
}

}  // namespace reformer::serving
