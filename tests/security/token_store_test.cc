// TokenStore (server/security/token_store.h): the tokens file's grammar and its errors (which name
// the line and never the token), authentication, and reloading on change.
#include "server/security/token_store.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reformer::serving {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlice[] = "alice-0123456789abcdef";
constexpr char kBob[] = "bob-0123456789abcdef:x";  // a ':' inside a token is fine

std::string Message(const absl::Status& s) { return std::string(s.message()); }

class TokenFile {
 public:
  TokenFile()
      : path_(std::filesystem::temp_directory_path() /
              ("tokens_test_" + std::to_string(getpid()))) {}
  ~TokenFile() { std::filesystem::remove(path_); }
  // Replaces the file (write aside, rename), as a Secret update does.
  void Write(const std::string& text) const {
    const std::string tmp = path_.string() + ".new";
    std::ofstream(tmp, std::ios::binary) << text;
    std::filesystem::rename(tmp, path_);
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

TEST(ParseTokenFileTest, CommentsBlankLinesSpacesAndCrlf) {
  auto entries = ParseTokenFile(
      absl::StrCat("# tenants\n\n  alice : ", kAlice, " \r\n\tbob:", kBob, "\n# end"), "f");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "alice");
  const std::array<uint8_t, 32>& digest = (*entries)[0].digest;
  EXPECT_EQ(std::string(digest.begin(), digest.end()), Sha256(kAlice));  // only the digest is kept
  EXPECT_EQ((*entries)[1].name, "bob");
}

TEST(ParseTokenFileTest, ANameMayHoldTwoTokensDuringARotation) {
  auto entries = ParseTokenFile(absl::StrCat("alice:", kAlice, "\nalice:", kBob, "\n"), "f");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ(entries->size(), 2u);
}

// Each malformed file: the error names the file and the line and never contains a token.
TEST(ParseTokenFileTest, ErrorsNameTheLineNotTheToken) {
  const std::string secret = "s3cret-value-0123456789";
  const struct {
    std::string text;
    std::string want;
  } cases[] = {
      {"# c\n" + secret + "\n", "tokens.txt line 2: expected 'name:token'"},
      {":" + secret, "line 1: the name before ':' is empty"},
      {"-alice:" + secret, "line 1: the name must be letters, digits"},
      {"al ice:" + secret, "line 1: the name must be letters"},
      {std::string(65, 'a') + ":" + secret, "line 1: the name is longer than 64 characters"},
      {"anonymous:" + secret, "line 1: the name 'anonymous' is reserved"},
      {"alice:short-", "line 1: the token is shorter than 16 characters (name 'alice')"},
      {"alice:" + std::string(4097, 'x'), "line 1: the token is longer than 4096 characters"},
      {"alice:" + secret + " more", "line 1: the token has a character outside visible ASCII"},
      {"alice:" + secret + "\nbob:" + secret,
       "line 2: the token of 'bob' is also on an earlier line"},
      {"# only a comment\n\n", "holds no 'name:token' line"},
  };
  for (const auto& c : cases) {
    auto entries = ParseTokenFile(c.text, "tokens.txt");
    ASSERT_FALSE(entries.ok()) << c.text;
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(entries.status()), HasSubstr(c.want)) << c.text;
    EXPECT_THAT(Message(entries.status()), Not(HasSubstr(secret)));
    EXPECT_THAT(Message(entries.status()), Not(HasSubstr("short-")));
  }
}

TEST(ParseTokenFileTest, TenantsAreBounded) {
  std::string text;
  for (int i = 0; i <= TokenStore::kMaxTenants; ++i)
    absl::StrAppend(&text, "t", i, ":token-number-", 100000 + i, "\n");
  auto entries = ParseTokenFile(text, "f");
  ASSERT_FALSE(entries.ok());
  EXPECT_THAT(Message(entries.status()), HasSubstr("line 1001: more than 1000 names"));
}

TEST(TokenStoreTest, AuthenticatesBearerTokens) {
  TokenFile file;
  file.Write(absl::StrCat("alice:", kAlice, "\nbob:", kBob, "\n"));
  auto store = TokenStore::Load(file.path());
  ASSERT_TRUE(store.ok()) << store.status();
  const TokenStore& s = **store;
  EXPECT_EQ(s.tenants(), (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(*s.Authenticate(absl::StrCat("Bearer ", kAlice)), "alice");
  EXPECT_EQ(*s.Authenticate(absl::StrCat("bearer  ", kBob, " ")), "bob");  // scheme case, spaces
  const struct {
    std::optional<absl::string_view> value;
    const char* want;
  } refused[] = {
      {std::nullopt, "no bearer token"},
      {"", "not 'Bearer <token>'"},
      {"Bearer", "not 'Bearer <token>'"},
      {"Basic YWxpY2U6eA==", "not 'Bearer <token>'"},
      {kAlice, "not 'Bearer <token>'"},
      {"Bearer alice-0123456789abcdeF", "not valid"},
      {"Bearer alice-0123456789abcde", "not valid"},  // a prefix of a token
  };
  for (const auto& r : refused) {
    auto tenant = s.Authenticate(r.value);
    ASSERT_FALSE(tenant.ok()) << (r.value ? *r.value : "(none)");
    EXPECT_EQ(tenant.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(Message(tenant.status()), HasSubstr(r.want));
    EXPECT_THAT(Message(tenant.status()), Not(HasSubstr("alice-")));
  }
}

TEST(TokenStoreTest, LoadNamesTheFile) {
  auto missing = TokenStore::Load("/nonexistent/tokens");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), HasSubstr("cannot open /nonexistent/tokens"));
  auto directory = TokenStore::Load("/tmp");
  ASSERT_FALSE(directory.ok());
  EXPECT_THAT(Message(directory.status()), HasSubstr("/tmp is not a regular file"));
}

TEST(TokenStoreTest, PollReloadsValidChangesAndKeepsTheOldTokensOtherwise) {
  TokenFile file;
  file.Write(absl::StrCat("alice:", kAlice, "\n"));
  auto loaded = TokenStore::Load(file.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  TokenStore& s = **loaded;
  EXPECT_EQ(s.Poll(), ReloadResult::kUnchanged);
  // A new tenant, the old one gone.
  file.Write(absl::StrCat("bob:", kBob, "\n"));
  EXPECT_EQ(s.Poll(), ReloadResult::kReloaded);
  EXPECT_EQ(*s.Authenticate(absl::StrCat("Bearer ", kBob)), "bob");
  EXPECT_FALSE(s.Authenticate(absl::StrCat("Bearer ", kAlice)).ok());
  // Malformed: refused once, then unchanged; bob still works.
  file.Write(absl::StrCat("bob ", kBob, "\n"));
  EXPECT_EQ(s.Poll(), ReloadResult::kRejected);
  EXPECT_EQ(s.Poll(), ReloadResult::kUnchanged);
  EXPECT_EQ(*s.Authenticate(absl::StrCat("Bearer ", kBob)), "bob");
  // Deleted (a Secret being swapped, an operator's mistake): the tokens stay.
  std::filesystem::remove(file.path());
  EXPECT_EQ(s.Poll(), ReloadResult::kRejected);
  EXPECT_EQ(*s.Authenticate(absl::StrCat("Bearer ", kBob)), "bob");
  // Back to a good file: in force at once.
  file.Write(absl::StrCat("alice:", kAlice, "\nbob:", kBob, "\n"));
  EXPECT_EQ(s.Poll(), ReloadResult::kReloaded);
  EXPECT_EQ(*s.Authenticate(absl::StrCat("Bearer ", kAlice)), "alice");
}

// The match is picked without branching on the comparisons: whichever entry matches, first, middle
// or last, the right tenant comes back.
TEST(TokenStoreTest, EveryEntryPositionMatches) {
  TokenFile file;
  std::string text;
  for (int i = 0; i < 50; ++i)
    absl::StrAppend(&text, "tenant", i, ":token-number-", 100000 + i, "\n");
  file.Write(text);
  auto s = TokenStore::Load(file.path());
  ASSERT_TRUE(s.ok()) << s.status();
  for (int i : {0, 1, 24, 48, 49}) {
    EXPECT_EQ(*(*s)->Authenticate(absl::StrCat("Bearer token-number-", 100000 + i)),
              absl::StrCat("tenant", i));
  }
}

}  // namespace
}  // namespace reformer::serving
