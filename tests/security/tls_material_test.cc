// LoadTlsMaterial and TlsReloader (server/security/tls_material.h) on certificates made at test
// time with the openssl CLI: what is accepted, what is refused at start-up (naming the flag and the
// file), and what a rotation takes into use or refuses. Time comes from a FakeClock.
#include "server/security/tls_material.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batching/clock.h"

namespace reformer::serving {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Replace(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".new";
  std::ofstream(tmp, std::ios::binary) << text;
  fs::rename(tmp, p);
}

// A CA and certificates signed by it, made once for the whole test program.
class Pki {
 public:
  static const Pki& Get() {
    static const Pki* pki = new Pki();
    return *pki;
  }
  fs::path dir() const { return dir_; }
  fs::path Path(const std::string& name) const { return dir_ / name; }
  bool ok() const { return ok_; }

 private:
  Pki() : dir_(fs::temp_directory_path() / ("tls_material_test_" + std::to_string(getpid()))) {
    fs::create_directories(dir_);
    ok_ = Run("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "
              "/CN=test-ca") &&
          Cert("server-a") && Cert("server-b") &&
          Run("openssl pkey -in server-a.key -aes128 -passout pass:secret -out encrypted.key");
  }
  bool Cert(const std::string& name) {
    return Run("openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -out " + name +
               ".csr -subj /CN=" + name) &&
           Run("openssl x509 -req -in " + name +
               ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out " + name + ".pem");
  }
  bool Run(const std::string& command) const {
    return std::system(("cd " + dir_.string() + " && " + command + " >/dev/null 2>&1").c_str()) ==
           0;
  }
  fs::path dir_;
  bool ok_ = false;
};

class TlsMaterialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Pki::Get().ok()) << "openssl could not make the test certificates";
    dir_ = fs::temp_directory_path() / ("tls_material_case_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    Serve("server-a");
    Replace(dir_ / "ca.pem", Read(Pki::Get().Path("ca.pem")));
  }
  void TearDown() override { fs::remove_all(dir_); }
  // The served files hold `name`'s certificate and key.
  void Serve(const std::string& name) {
    Replace(dir_ / "tls.key", Read(Pki::Get().Path(name + ".key")));
    Replace(dir_ / "tls.pem", Read(Pki::Get().Path(name + ".pem")));
  }
  TlsFiles Files(bool mutual = true) const {
    return {(dir_ / "tls.pem").string(), (dir_ / "tls.key").string(),
            mutual ? (dir_ / "ca.pem").string() : ""};
  }
  fs::path dir_;
  FakeClock clock_{absl::Now()};
};

TEST_F(TlsMaterialTest, LoadsACheckedPair) {
  auto m = LoadTlsMaterial(Files(), clock_.Now());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->leaf.subject, "CN=server-a");
  EXPECT_FALSE(m->leaf.serial.empty());
  EXPECT_GT(m->leaf.not_after, clock_.Now());
  EXPECT_THAT(m->cert_chain_pem, HasSubstr("-----BEGIN CERTIFICATE-----"));
  EXPECT_THAT(m->cert_chain_pem, ::testing::Not(HasSubstr("PRIVATE KEY")));
  EXPECT_THAT(m->private_key_pem, HasSubstr("-----BEGIN PRIVATE KEY-----"));
  EXPECT_THAT(m->client_ca_pem, HasSubstr("-----BEGIN CERTIFICATE-----"));
  auto plain = LoadTlsMaterial(Files(/*mutual=*/false), clock_.Now());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->client_ca_pem.empty());
  EXPECT_NE(plain->fingerprint, m->fingerprint);
}

TEST_F(TlsMaterialTest, RefusesWhatAHandshakeWouldFailOn) {
  const std::string key = (dir_ / "tls.key").string(), cert = (dir_ / "tls.pem").string();
  const std::string ca = (dir_ / "ca.pem").string();
  struct Case {
    const char* what;
    std::function<void()> break_files;
    std::string want;
  };
  const Case cases[] = {
      {"missing key", [&] { fs::remove(key); }, "--tls_key_file: cannot open " + key},
      {"another key", [&] { Replace(key, Read(Pki::Get().Path("server-b.key"))); },
       "--tls_key_file " + key + " is not the private key of the certificate in --tls_cert_file " +
           cert + " (subject CN=server-a)"},
      {"encrypted key", [&] { Replace(key, Read(Pki::Get().Path("encrypted.key"))); },
       "--tls_key_file " + key + ": not an unencrypted PEM private key"},
      {"key in the cert file", [&] { Replace(cert, Read(Pki::Get().Path("server-a.key"))); },
       "--tls_cert_file " + cert + ": no PEM certificate in it"},
      {"truncated certificate",
       [&] { Replace(cert, Read(Pki::Get().Path("server-a.pem")).substr(0, 300)); },
       "--tls_cert_file " + cert},
      {"empty CA", [&] { Replace(ca, ""); },
       "--tls_client_ca_file " + ca + ": no PEM certificate in it"},
  };
  for (const Case& c : cases) {
    SetUp();
    c.break_files();
    auto m = LoadTlsMaterial(Files(), clock_.Now());
    ASSERT_FALSE(m.ok()) << c.what;
    EXPECT_THAT(Message(m.status()), HasSubstr(c.want)) << c.what;
  }
}

TEST_F(TlsMaterialTest, RefusesAnExpiredCertificate) {
  auto m = LoadTlsMaterial(Files(), clock_.Now());
  ASSERT_TRUE(m.ok()) << m.status();
  clock_.Set(m->leaf.not_after + absl::Seconds(1));
  auto expired = LoadTlsMaterial(Files(), clock_.Now());
  ASSERT_FALSE(expired.ok());
  EXPECT_THAT(Message(expired.status()), HasSubstr("(subject CN=server-a) expired at"));
}

TEST_F(TlsMaterialTest, ReloaderAppliesGoodRotationsAndKeepsTheCertificateOtherwise) {
  auto initial = LoadTlsMaterial(Files(), clock_.Now());
  ASSERT_TRUE(initial.ok()) << initial.status();
  std::vector<std::string> applied;
  bool refuse = false;
  TlsReloader reloader(Files(), &clock_, *initial, [&](const TlsMaterial& m) {
    if (refuse) return absl::InternalError("apply refused");
    applied.push_back(m.leaf.subject);
    return absl::OkStatus();
  });
  EXPECT_EQ(reloader.Poll(), ReloadResult::kUnchanged);
  // Half a rotation (new key, old certificate): refused, once.
  Replace(dir_ / "tls.key", Read(Pki::Get().Path("server-b.key")));
  EXPECT_EQ(reloader.Poll(), ReloadResult::kRejected);
  EXPECT_EQ(reloader.Poll(), ReloadResult::kUnchanged);
  EXPECT_EQ(reloader.current().subject, "CN=server-a");
  // The other half arrives: applied.
  Replace(dir_ / "tls.pem", Read(Pki::Get().Path("server-b.pem")));
  EXPECT_EQ(reloader.Poll(), ReloadResult::kReloaded);
  EXPECT_EQ(applied, std::vector<std::string>{"CN=server-b"});
  EXPECT_EQ(reloader.current().subject, "CN=server-b");
  EXPECT_EQ(reloader.Poll(), ReloadResult::kUnchanged);
  // Files gone: refused, the certificate in force stays; back to server-a but apply fails: refused.
  fs::remove(dir_ / "tls.pem");
  EXPECT_EQ(reloader.Poll(), ReloadResult::kRejected);
  Serve("server-a");
  refuse = true;
  EXPECT_EQ(reloader.Poll(), ReloadResult::kRejected);
  EXPECT_EQ(reloader.current().subject, "CN=server-b");
  // The files in force are not checked again: expiring in place is not a reload (it is a metric).
  refuse = false;
  Serve("server-b");
  clock_.Advance(absl::Hours(24 * 30));
  EXPECT_EQ(reloader.Poll(), ReloadResult::kUnchanged);
}

}  // namespace
}  // namespace reformer::serving
