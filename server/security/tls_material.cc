#include "server/security/tls_material.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/base/logging.h"
#include "server/security/token_store.h"

namespace reformer::serving {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The last OpenSSL error as text, and the error queue cleared (this thread's).
std::string OpenSslError() {
  const unsigned long e = ERR_peek_last_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

BioPtr ReadBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

// Every certificate of a PEM text, in order; INVALID_ARGUMENT (`what` names flag and file) when
// there is none or one does not parse.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& text,
                                                       const std::string& what) {
  BioPtr bio = ReadBio(text);
  std::vector<X509Ptr> certs;
  ERR_clear_error();
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(x);
  const unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
    ERR_clear_error();  // the normal end of the text
  } else if (e != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a certificate does not parse: ", OpenSslError()));
  }
  if (certs.empty())
    return absl::InvalidArgumentError(absl::StrCat(what, ": no PEM certificate in it"));
  return certs;
}

// No passphrase: an encrypted key fails to load instead of prompting.
int NoPassphrase(char*, int, int, void*) { return 0; }

absl::Time AsnTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

CertificateInfo Describe(X509* cert) {
  CertificateInfo info;
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  info.subject = BioText(bio.get());
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      info.serial = hex;
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  info.not_before = AsnTime(X509_get0_notBefore(cert));
  info.not_after = AsnTime(X509_get0_notAfter(cert));
  return info;
}

std::string EncodeCertificates(const std::vector<X509Ptr>& certs) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  for (const X509Ptr& c : certs) PEM_write_bio_X509(bio.get(), c.get());
  return BioText(bio.get());
}

// The server's certificates and key: parsed, matched, valid at `now`.
absl::Status LoadIdentity(const TlsFiles& files, const std::string& cert_text,
                          const std::string& key_text, absl::Time now, TlsMaterial* out) {
  const std::string cert_what = absl::StrCat("--tls_cert_file ", files.cert_file);
  absl::StatusOr<std::vector<X509Ptr>> certs = ParseCertificates(cert_text, cert_what);
  if (!certs.ok()) return certs.status();
  BioPtr key_bio = ReadBio(key_text);
  PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, &NoPassphrase, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file ", files.key_file,
                                                   ": not an unencrypted PEM private key (",
                                                   OpenSslError(), ")"));
  }
  X509* leaf = (*certs)[0].get();
  out->leaf = Describe(leaf);
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file ", files.key_file, " is not the private key of the certificate in ",
        cert_what, " (subject ", out->leaf.subject, ")"));
  }
  if (now > out->leaf.not_after) {
    return absl::InvalidArgumentError(absl::StrCat(cert_what, ": the certificate (subject ",
                                                   out->leaf.subject, ") expired at ",
                                                   absl::FormatTime(out->leaf.not_after)));
  }
  if (now < out->leaf.not_before) {
    LOG_WARNING(cert_what, ": the certificate is not valid before ",
                absl::FormatTime(out->leaf.not_before),
                " (clock skew?); clients will refuse it until then");
  }
  out->cert_chain_pem = EncodeCertificates(*certs);
  BioPtr key_out(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(key_out.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  out->private_key_pem = BioText(key_out.get());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TlsFileContents> ReadTlsFiles(const TlsFiles& files) {
  TlsFileContents out;
  const struct {
    const char* flag;
    const std::string* path;
    std::string* text;
  } reads[] = {{"--tls_cert_file", &files.cert_file, &out.cert},
               {"--tls_key_file", &files.key_file, &out.key},
               {"--tls_client_ca_file", &files.client_ca_file, &out.client_ca}};
  std::string all;
  for (const auto& r : reads) {
    if (r.path->empty()) continue;  // no client CA
    absl::StatusOr<std::string> text = ReadCredentialFile(*r.path, kMaxTlsFileBytes);
    if (!text.ok())
      return absl::Status(text.status().code(),
                          absl::StrCat(r.flag, ": ", text.status().message()));
    *r.text = *std::move(text);
    absl::StrAppend(&all, r.text->size(), ":", *r.text);
  }
  out.fingerprint = Sha256(all);
  return out;
}

absl::StatusOr<TlsMaterial> CheckTlsMaterial(const TlsFiles& files, const TlsFileContents& contents,
                                             absl::Time now) {
  TlsMaterial m;
  m.fingerprint = contents.fingerprint;
  if (absl::Status s = LoadIdentity(files, contents.cert, contents.key, now, &m); !s.ok()) return s;
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::vector<X509Ptr>> cas = ParseCertificates(
        contents.client_ca, absl::StrCat("--tls_client_ca_file ", files.client_ca_file));
    if (!cas.ok()) return cas.status();
    m.client_ca_pem = EncodeCertificates(*cas);
  }
  return m;
}

absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files, absl::Time now) {
  absl::StatusOr<TlsFileContents> contents = ReadTlsFiles(files);
  if (!contents.ok()) return contents.status();
  return CheckTlsMaterial(files, *contents, now);
}

TlsReloader::TlsReloader(TlsFiles files, const Clock* clock, const TlsMaterial& initial,
                         Apply apply)
    : files_(std::move(files)),
      clock_(clock),
      apply_(std::move(apply)),
      current_(initial.leaf),
      applied_fingerprint_(initial.fingerprint) {}

ReloadResult TlsReloader::Poll() {
  absl::StatusOr<TlsFileContents> contents = ReadTlsFiles(files_);
  // Unreadable files are fingerprinted by their error, so the same problem is logged once. The
  // files in force are not checked again (their certificate's expiry is a metric and an alert).
  const std::string fingerprint =
      contents.ok() ? contents->fingerprint : Sha256(contents.status().ToString());
  {
    absl::MutexLock lock(&mu_);
    if (fingerprint == applied_fingerprint_ || fingerprint == rejected_fingerprint_) {
      return ReloadResult::kUnchanged;
    }
  }
  absl::StatusOr<TlsMaterial> m = contents.ok() ? CheckTlsMaterial(files_, *contents, clock_->Now())
                                                : absl::StatusOr<TlsMaterial>(contents.status());
  absl::Status status = m.ok() ? apply_(*m) : m.status();
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    rejected_fingerprint_ = fingerprint;
    LOG_ERROR("the changed TLS files are not used, the certificate in force stays (subject ",
              current_.subject, ", serial ", current_.serial, "): ", status.message());
    return ReloadResult::kRejected;
  }
  applied_fingerprint_ = fingerprint;
  rejected_fingerprint_.clear();
  current_ = m->leaf;
  LOG_INFO("TLS certificate reloaded: subject ", current_.subject, ", serial ", current_.serial,
           ", valid until ", absl::FormatTime(current_.not_after), "; new connections use it");
  return ReloadResult::kReloaded;
}

CertificateInfo TlsReloader::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

}  // namespace reformer::serving
