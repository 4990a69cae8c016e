// Fuzz target: the bearer-token file (--auth_tokens_file, server/security/token_store.h) and the
// `authorization` value every authenticated call presents. Input: the file's text, then optionally
// '\0' and an authorization value. Each file goes through ParseTokenFile (what Load and Poll run);
// an accepted one is then written to a scratch file and loaded as the server loads it
// (TokenStore::Load), and every token it holds plus the fuzzed authorization value are presented
// to Authenticate.
// Invariants: errors are INVALID_ARGUMENT (UNAUTHENTICATED for Authenticate) and never quote a
// token; accepted names follow the documented rules; every accepted token authenticates as its
// line's name; a fuzzed value is accepted only if it carries one of the file's tokens.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_files.h"
#include "server/security/token_store.h"

namespace {

using reformer::serving::ParseTokenFile;
using reformer::serving::TokenStore;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

// True when `s` holds a character that no error message text contains (messages are words,
// digits, the path and the punctuation ' . : _ - , ( ) /), so `s` inside a message = a leak.
bool Distinctive(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && absl::string_view(" '.:_-,()/").find(c) == absl::string_view::npos)
      return true;
  }
  return false;
}

// name -> tokens of the lines that parse as "name:token" (as the parser splits them).
std::multimap<std::string, std::string> Lines(absl::string_view text) {
  std::multimap<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    const size_t colon = line.find(':');
    if (line.empty() || line[0] == '#' || colon == absl::string_view::npos) continue;
    out.emplace(std::string(absl::StripAsciiWhitespace(line.substr(0, colon))),
                std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  }
  return out;
}

void CheckNoTokenIn(const std::string& message, const std::multimap<std::string, std::string>& lines) {
  for (const auto& [name, token] : lines) {
    if (token.size() >= 16 && Distinctive(token)) {
      Check(message.find(token) == std::string::npos, "an error message quotes a token");
    }
  }
}

// Removed at exit (libFuzzer exits through exit(), so statics are destroyed).
const reformer::fuzz::ScratchDir& Dir() {
  static const reformer::fuzz::ScratchDir dir("token_file");
  return dir;
}

void CheckStore(const std::string& text, absl::string_view authorization, size_t entries) {
  Dir().Write("tokens", text);
  auto store = TokenStore::Load(Dir().path() + "/tokens");
  Check(store.ok(), "a file ParseTokenFile accepts loads");
  const std::multimap<std::string, std::string> lines = Lines(text);
  Check(lines.size() == entries, "one entry per 'name:token' line");
  for (const auto& [name, token] : lines) {
    auto tenant = (*store)->Authenticate("Bearer " + token);
    Check(tenant.ok() && *tenant == name, "each token authenticates as its line's name");
  }
  auto tenant = (*store)->Authenticate(authorization);
  if (tenant.ok()) {
    absl::string_view v = absl::StripAsciiWhitespace(authorization);
    Check(absl::StartsWithIgnoreCase(v, "bearer "), "accepted only with the Bearer scheme");
    const std::string sent(absl::StripLeadingAsciiWhitespace(v.substr(7)));
    bool known = false;
    for (const auto& [name, token] : lines) known |= (token == sent && name == *tenant);
    Check(known, "a value is accepted only with one of the file's tokens, as its name");
  } else {
    Check(absl::IsUnauthenticated(tenant.status()), "a refused value is UNAUTHENTICATED");
    const std::string sent(authorization);
    if (sent.size() >= 16 && Distinctive(sent)) {
      Check(tenant.status().message().find(sent) == absl::string_view::npos,
            "UNAUTHENTICATED quotes what was sent");
    }
  }
  Check(!(*store)->Authenticate(std::nullopt).ok(), "no value is UNAUTHENTICATED");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string text(input.substr(0, nul));
  const absl::string_view authorization =
      nul == absl::string_view::npos ? absl::string_view() : input.substr(nul + 1);
  auto entries = ParseTokenFile(text, "fuzz/tokens");
  if (!entries.ok()) {
    Check(absl::IsInvalidArgument(entries.status()), "a refused file is INVALID_ARGUMENT");
    CheckNoTokenIn(std::string(entries.status().message()), Lines(text));
    return 0;
  }
  Check(!entries->empty() && entries->size() <= size, "at least one entry, none from nothing");
  for (const auto& e : *entries) {
    Check(!e.name.empty() && e.name.size() <= 64 && absl::ascii_isalnum(e.name[0]) &&
              e.name != reformer::serving::kAnonymousTenant,
          "accepted names follow the rules");
  }
  CheckStore(text, authorization, entries->size());
  return 0;
}
