// TokenStore: the bearer tokens of --auth_tokens_file, one store shared by the gRPC and HTTP
// adapters (server/grpc/auth.h, server/http/http_server.cc). No gRPC, no HTTP library.
//
// File format, one entry a line:
//     # a comment line
//     name:token
// Blank lines and lines starting with '#' are ignored; spaces and tabs around the name and the
// token are dropped (a trailing CR too). The token is everything after the first ':'.
//   name   1 to 64 characters [A-Za-z0-9._-], starting with a letter or digit, not "anonymous"
//          (the tenant label of calls without a token). A name may appear on several lines: a
//          tenant's old and new token during a token rotation.
//   token  16 to 4096 visible ASCII characters (0x21-0x7E). The same token under two lines is an
//          error (the tenant would be ambiguous).
// At most kMaxTenants distinct names and kMaxFileBytes bytes. Errors name the file and the line,
// never a token (nor the text of a line that does not parse: it may be one).
//
// Only the SHA-256 digest of each token is kept. Authenticate hashes the presented token and
// compares its digest with every entry (CRYPTO_memcmp, no early exit, the match picked without a
// branch), so the time it takes does not depend on which entry matched or how much of it.
//
// Rotation: Poll() re-reads the file (called periodically by CredentialPoller). A changed file
// that parses replaces the tokens for every call that starts afterwards (calls in flight were
// admitted already); one that does not parse keeps the old tokens and logs why, once per distinct
// content. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/security/credential_poller.h"

namespace reformer::serving {

// The tenant label of requests without an authenticated caller: authentication off, or a call
// refused as UNAUTHENTICATED. Reserved: no token may be named so.
inline constexpr char kAnonymousTenant[] = "anonymous";

struct TokenEntry {
  std::string name;
  std::array<uint8_t, 32> digest;  // SHA-256 of the token
};

// Parses a tokens file's text; `path` only names the file in errors (INVALID_ARGUMENT).
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view text,
                                                       absl::string_view path);

class TokenStore {
 public:
  static constexpr int kMaxTenants = 1000;
  static constexpr int64_t kMaxFileBytes = int64_t{1} << 20;

  // Reads and parses `path`; INVALID_ARGUMENT / NOT_FOUND naming the file (and line).
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(const std::string& path);

  // The tenant (the token's name) for the value of an `authorization` header or metadata entry,
  // which must be "Bearer <token>" (scheme case-insensitive); nullopt = none was sent.
  // UNAUTHENTICATED otherwise, with a message that never contains what was sent.
  absl::StatusOr<std::string> Authenticate(std::optional<absl::string_view> authorization) const;

  // Re-reads the file: kReloaded when new tokens are in force; kRejected when it changed to
  // something unusable (the old tokens stay; logged), reported once per distinct content;
  // kUnchanged otherwise.
  ReloadResult Poll();

  const std::string& path() const { return path_; }
  // Distinct tenant names in force, sorted.
  std::vector<std::string> tenants() const;

 private:
  TokenStore(std::string path, std::vector<TokenEntry> entries, std::string content_digest);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<TokenEntry>> entries_ ABSL_GUARDED_BY(mu_);
  std::string applied_digest_ ABSL_GUARDED_BY(mu_);   // of the file content in force
  std::string rejected_digest_ ABSL_GUARDED_BY(mu_);  // of the last content refused (logged once)
};

// Reads a whole (small) credential file: NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT (not a
// regular file, larger than `max_bytes`), each naming the file. Shared with tls_material.
absl::StatusOr<std::string> ReadCredentialFile(const std::string& path, int64_t max_bytes);

// SHA-256 of `data`, as raw bytes in a string (file-content fingerprints).
std::string Sha256(absl::string_view data);

}  // namespace reformer::serving
