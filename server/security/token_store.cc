#include "server/security/token_store.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/base/logging.h"

namespace reformer::serving {
namespace {

constexpr size_t kMaxNameLength = 64;
constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 4096;

std::array<uint8_t, 32> Digest(absl::string_view data) {
  std::array<uint8_t, 32> out{};
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

bool IsNameChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; }

// The problem with a name, or "" when it is a good one.
std::string NameProblem(absl::string_view name) {
  if (name.empty()) return "the name before ':' is empty";
  if (name.size() > kMaxNameLength)
    return absl::StrCat("the name is longer than ", kMaxNameLength, " characters");
  if (!absl::ascii_isalnum(name[0]) || !std::all_of(name.begin(), name.end(), IsNameChar)) {
    return "the name must be letters, digits, '.', '_' or '-', starting with a letter or digit";
  }
  if (name == kAnonymousTenant)
    return "the name 'anonymous' is reserved (the tenant of calls without a token)";
  return "";
}

// The problem with a token, or "" when it is a good one. Never quotes the token.
std::string TokenProblem(absl::string_view token) {
  if (token.size() < kMinTokenLength) {
    return absl::StrCat("the token is shorter than ", kMinTokenLength, " characters");
  }
  if (token.size() > kMaxTokenLength)
    return absl::StrCat("the token is longer than ", kMaxTokenLength, " characters");
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) return "the token has a character outside visible ASCII (0x21-0x7E)";
  }
  return "";
}

absl::Status LineError(absl::string_view path, int line, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokens file ", path, " line ", line, ": ", problem));
}

}  // namespace

std::string Sha256(absl::string_view data) {
  const std::array<uint8_t, 32> d = Digest(data);
  return std::string(d.begin(), d.end());
}

absl::StatusOr<std::string> ReadCredentialFile(const std::string& path, int64_t max_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::InvalidArgumentError(message);
  }
  std::string out;
  struct stat st;
  absl::Status status;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  } else if (st.st_size > max_bytes) {
    status =
        absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
  } else {
    char buf[16384];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = absl::InvalidArgumentError(
            absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
        break;
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (static_cast<int64_t>(out.size()) > max_bytes) {
        status =
            absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
        break;
      }
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view text,
                                                       absl::string_view path) {
  std::vector<TokenEntry> entries;
  std::set<std::string> names;
  std::set<std::array<uint8_t, 32>> digests;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos)
      return LineError(path, line_number, "expected 'name:token'");
    const absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, colon));
    const absl::string_view token = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (std::string p = NameProblem(name); !p.empty()) return LineError(path, line_number, p);
    if (std::string p = TokenProblem(token); !p.empty()) {
      return LineError(path, line_number, absl::StrCat(p, " (name '", name, "')"));
    }
    TokenEntry entry{std::string(name), Digest(token)};
    if (!digests.insert(entry.digest).second) {
      return LineError(path, line_number,
                       absl::StrCat("the token of '", name, "' is also on an earlier line"));
    }
    names.insert(entry.name);
    if (static_cast<int>(names.size()) > TokenStore::kMaxTenants) {
      return LineError(path, line_number,
                       absl::StrCat("more than ", TokenStore::kMaxTenants, " names"));
    }
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens file ", path, " holds no 'name:token' line"));
  }
  return entries;
}

TokenStore::TokenStore(std::string path, std::vector<TokenEntry> entries,
                       std::string content_digest)
    : path_(std::move(path)),
      entries_(std::make_shared<const std::vector<TokenEntry>>(std::move(entries))),
      applied_digest_(std::move(content_digest)) {}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadCredentialFile(path, kMaxFileBytes);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(*text, path);
  if (!entries.ok()) return entries.status();
  return std::unique_ptr<TokenStore>(new TokenStore(path, *std::move(entries), Sha256(*text)));
}

absl::StatusOr<std::string> TokenStore::Authenticate(
    std::optional<absl::string_view> authorization) const {
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "no bearer token: send the header 'authorization: Bearer <token>'");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme)) {
    return absl::UnauthenticatedError("the authorization value is not 'Bearer <token>'");
  }
  const std::array<uint8_t, 32> digest =
      Digest(absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size())));
  std::shared_ptr<const std::vector<TokenEntry>> entries;
  {
    absl::MutexLock lock(&mu_);
    entries = entries_;
  }
  // Every entry is compared; the match is selected with masks, not branches.
  size_t match = 0;
  size_t found = 0;
  for (size_t i = 0; i < entries->size(); ++i) {
    const size_t equal =
        static_cast<size_t>(CRYPTO_memcmp(digest.data(), (*entries)[i].digest.data(), 32) == 0);
    const size_t take = equal & ~found & 1u;
    const size_t mask = size_t{0} - take;
    match = (match & ~mask) | (i & mask);
    found |= equal;
  }
  if (found == 0) return absl::UnauthenticatedError("the bearer token is not valid");
  return (*entries)[match].name;
}

ReloadResult TokenStore::Poll() {
  absl::StatusOr<std::string> text = ReadCredentialFile(path_, kMaxFileBytes);
  const std::string digest = text.ok() ? Sha256(*text) : Sha256(text.status().ToString());
  {
    absl::MutexLock lock(&mu_);
    if (digest == applied_digest_) return ReloadResult::kUnchanged;
    if (digest == rejected_digest_) return ReloadResult::kUnchanged;  // refused and logged before
  }
  absl::StatusOr<std::vector<TokenEntry>> entries =
      text.ok() ? ParseTokenFile(*text, path_)
                : absl::StatusOr<std::vector<TokenEntry>>(text.status());
  absl::MutexLock lock(&mu_);
  if (!entries.ok()) {
    rejected_digest_ = digest;
    LOG_ERROR("the changed tokens file is not used, the previous tokens stay in force: ",
              entries.status().message());
    return ReloadResult::kRejected;
  }
  std::set<std::string> names;
  for (const TokenEntry& e : *entries) names.insert(e.name);
  entries_ = std::make_shared<const std::vector<TokenEntry>>(*std::move(entries));
  applied_digest_ = digest;
  rejected_digest_.clear();
  LOG_INFO("tokens file ", path_, " reloaded: ", entries_->size(), " tokens for ", names.size(),
           " tenants");
  return ReloadResult::kReloaded;
}

std::vector<std::string> TokenStore::tenants() const {
  std::shared_ptr<const std::vector<TokenEntry>> entries;
  {
    absl::MutexLock lock(&mu_);
    entries = entries_;
  }
  std::set<std::string> names;
  for (const TokenEntry& e : *entries) names.insert(e.name);
  return std::vector<std::string>(names.begin(), names.end());
}

}  // namespace reformer::serving
