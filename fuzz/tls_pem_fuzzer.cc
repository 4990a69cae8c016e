// Fuzz target: the TLS files (--tls_cert_file, --tls_key_file, --tls_client_ca_file;
// server/security/tls_material.h), checked as at start-up and at every rotation. Input: the
// certificate file's text, '\0', the key file's text, and optionally '\0' and the client CA file's
// text (mutual TLS). Drives CheckTlsMaterial, the part of LoadTlsMaterial and TlsReloader::Poll
// after the files are read, at a fixed time (2030-01-01: the seeds' certificates are valid then).
// Invariants: a refusal is INVALID_ARGUMENT and quotes no PEM; accepted material has a certificate
// chain and a key, and is accepted again, unchanged, when fed back (what was checked is what is
// handed to gRPC).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/security/tls_material.h"

namespace {

using reformer::serving::CheckTlsMaterial;
using reformer::serving::TlsFileContents;
using reformer::serving::TlsFiles;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul1 = input.find('\0');
  if (nul1 == absl::string_view::npos) return 0;
  const size_t nul2 = input.find('\0', nul1 + 1);
  TlsFiles files{"cert.pem", "key.pem", nul2 == absl::string_view::npos ? "" : "ca.pem"};
  TlsFileContents contents;
  contents.cert = std::string(input.substr(0, nul1));
  contents.key = std::string(input.substr(nul1 + 1, nul2 == absl::string_view::npos
                                                        ? absl::string_view::npos
                                                        : nul2 - nul1 - 1));
  if (nul2 != absl::string_view::npos) contents.client_ca = std::string(input.substr(nul2 + 1));
  contents.fingerprint = "fuzz";
  const absl::Time now = absl::FromUnixSeconds(1893456000);  // 2030-01-01T00:00:00Z
  auto material = CheckTlsMaterial(files, contents, now);
  if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) {  // to check what seeds reach
    std::fprintf(stderr, "  %s\n", material.status().ToString().c_str());
  }
  if (!material.ok()) {
    Check(absl::IsInvalidArgument(material.status()), "a refusal is INVALID_ARGUMENT");
    Check(material.status().message().find("-----BEGIN") == absl::string_view::npos,
          "an error quotes PEM text");
    return 0;
  }
  Check(!material->cert_chain_pem.empty() && !material->private_key_pem.empty(),
        "accepted material has certificates and a key");
  Check(files.client_ca_file.empty() == material->client_ca_pem.empty(),
        "a client CA file gives CA certificates");
  Check(material->leaf.not_after >= now, "an expired certificate is refused");
  TlsFileContents again{material->cert_chain_pem, material->private_key_pem,
                        material->client_ca_pem, "fuzz"};
  auto second = CheckTlsMaterial(files, again, now);
  Check(second.ok(), "accepted material is accepted again");
  Check(second->cert_chain_pem == material->cert_chain_pem &&
            second->private_key_pem == material->private_key_pem &&
            second->client_ca_pem == material->client_ca_pem &&
            second->leaf.subject == material->leaf.subject &&
            second->leaf.serial == material->leaf.serial,
        "re-encoding is stable");
  return 0;
}
