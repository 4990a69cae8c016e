// TLS material of the gRPC port: the server certificate chain and private key (--tls_cert_file,
// --tls_key_file) and, for mutual TLS, the CA bundle client certificates must chain to
// (--tls_client_ca_file). Read and checked with OpenSSL here; server/grpc/grpc_tls.h hands it to
// gRPC. No gRPC.
//
// LoadTlsMaterial checks everything a TLS handshake would otherwise fail on later: each file
// readable, PEM, the certificate file holding at least one certificate (the server's first, then
// its chain), the key an unencrypted PEM private key that belongs to the first certificate, that
// certificate valid now, the CA file holding at least one certificate. Each error names the flag
// and the file. The material keeps the certificates and the key re-encoded as PEM (exactly what was
// checked, nothing else from the files).
//
// TlsReloader watches the files for a rotation: Poll() re-reads them; a changed set that passes
// every check above is handed to `apply`; one that does not (a half-copied pair, a key that does
// not match, an expired certificate) is refused, logged once, and the material in force stays.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batching/clock.h"
#include "server/security/credential_poller.h"

namespace reformer::serving {

struct TlsFiles {
  std::string cert_file;       // PEM: the server's certificate, then intermediates
  std::string key_file;        // PEM: its private key, unencrypted
  std::string client_ca_file;  // PEM CA bundle; "" = no client certificates (TLS, not mTLS)
};

struct CertificateInfo {
  std::string subject;  // RFC 2253
  std::string serial;   // hexadecimal
  absl::Time not_before;
  absl::Time not_after;
};

struct TlsMaterial {
  std::string cert_chain_pem;   // the certificates of cert_file, server's first
  std::string private_key_pem;  // PKCS#8, unencrypted
  std::string client_ca_pem;    // "" = no client certificates requested
  CertificateInfo leaf;         // the server's certificate
  std::string fingerprint;      // of the files' contents as read (change detection)
};

// Largest credential file read (a certificate bundle is a few kilobytes).
inline constexpr int64_t kMaxTlsFileBytes = int64_t{1} << 20;

// Reads and checks the files (see the file comment); `now` checks the certificate's validity.
// INVALID_ARGUMENT / NOT_FOUND / PERMISSION_DENIED naming the flag and the file.
absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files, absl::Time now);

// The two halves of LoadTlsMaterial: the files' contents as read (and their fingerprint), then the
// checks.
struct TlsFileContents {
  std::string cert, key, client_ca;
  std::string fingerprint;
};
absl::StatusOr<TlsFileContents> ReadTlsFiles(const TlsFiles& files);
absl::StatusOr<TlsMaterial> CheckTlsMaterial(const TlsFiles& files, const TlsFileContents& contents,
                                             absl::Time now);

class TlsReloader {
 public:
  // Called with each new material that passed the checks; a non-OK status refuses it (logged).
  using Apply = std::function<absl::Status(const TlsMaterial&)>;

  // `initial` is the material in force (from LoadTlsMaterial on the same files). Borrows `clock`.
  TlsReloader(TlsFiles files, const Clock* clock, const TlsMaterial& initial, Apply apply);

  ReloadResult Poll();
  // The server certificate in force.
  CertificateInfo current() const;

 private:
  const TlsFiles files_;
  const Clock* const clock_;
  const Apply apply_;
  mutable absl::Mutex mu_;
  CertificateInfo current_ ABSL_GUARDED_BY(mu_);
  std::string applied_fingerprint_ ABSL_GUARDED_BY(mu_);
  std::string rejected_fingerprint_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reformer::serving
