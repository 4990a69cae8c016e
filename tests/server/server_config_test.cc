// reformer-server's configuration tree (server/config): defaults, REFORMER_* environment, the
// command line, ranges rejected naming the flag, resolution of automatic values, the host facts
// (CPU quota, thread defaults, default model search) and the README's generated flag table.
#include "server/config/server_config.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config/host.h"

namespace reformer::serving {
namespace {

using ::testing::HasSubstr;
using Env = std::vector<std::pair<std::string, std::string>>;

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args, Env env, ServerConfig* config) {
  return ParseServerCommandLine(args, env, config);
}

std::string ErrorOf(std::vector<std::string> args, Env env = {}) {
  ServerConfig config;
  absl::StatusOr<CommandLine> r = Parse(std::move(args), std::move(env), &config);
  if (r.ok()) return "(accepted)";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(ServerConfigTest, DefaultsComeFromTheStructs) {
  ServerConfig config;
  absl::StatusOr<CommandLine> r = Parse({}, {}, &config);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->help);
  EXPECT_TRUE(r->warnings.empty());
  EXPECT_EQ(config.listen.grpc_port, 8001);
  EXPECT_EQ(config.listen.http_port, 8000);
  EXPECT_EQ(config.batching.memory_budget_bytes, int64_t{4} << 30);
  EXPECT_EQ(config.batching.max_batch_tokens, 0);
  EXPECT_TRUE(config.warmup);
  EXPECT_EQ(config.log_level, "info");
}

TEST(ServerConfigTest, EnvironmentSetsFlagsAndTheCommandLineWins) {
  ServerConfig config;
  absl::StatusOr<CommandLine> r =
      Parse({"--grpc_port=9001", "--nowarmup"},
            {{"REFORMER_GRPC_PORT", "7001"}, {"REFORMER_HTTP_PORT", "7000"}, {"REFORMER_MODEL_NAME", "m"},
             {"REFORMER_BATCH_LENGTH_RATIO", "2.5"}, {"PATH", "/bin"}},
            &config);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(config.listen.grpc_port, 9001);
  EXPECT_EQ(config.listen.http_port, 7000);
  EXPECT_EQ(config.model.name, "m");
  EXPECT_EQ(config.batching.batch_length_ratio, 2.5);
  EXPECT_FALSE(config.warmup);
  ASSERT_TRUE(Parse({"--warmup=false", "--max_batch_size", "8"}, {}, &config).ok());
  EXPECT_FALSE(config.warmup);
  EXPECT_EQ(config.batching.max_batch_size, 8);
}

TEST(ServerConfigTest, NonsenseIsRejectedNamingTheFlag) {
  // A negative budget used to become SIZE_MAX (no bound at all).
  EXPECT_THAT(ErrorOf({"--memory_budget_bytes=-1"}), HasSubstr("--memory_budget_bytes=-1"));
  EXPECT_THAT(ErrorOf({"--memory_budget_bytes=-1"}), HasSubstr(">= 1"));
  EXPECT_THAT(ErrorOf({}, {{"REFORMER_MEMORY_BUDGET_BYTES", "-5"}}),
              HasSubstr("REFORMER_MEMORY_BUDGET_BYTES='-5' (--memory_budget_bytes)"));
  EXPECT_THAT(ErrorOf({"--max_batch_size=0"}), HasSubstr("--max_batch_size"));
  EXPECT_THAT(ErrorOf({"--workspace_budget_bytes", "0"}), HasSubstr("--workspace_budget_bytes"));
  EXPECT_THAT(ErrorOf({"--grpc_port=70000"}), HasSubstr("[0, 65535]"));
  EXPECT_THAT(ErrorOf({"--workers=-2"}), HasSubstr("--workers"));
  EXPECT_THAT(ErrorOf({"--max_queue_requests=0"}), HasSubstr("--max_queue_requests"));
  EXPECT_THAT(ErrorOf({"--drain_timeout_s=-1"}), HasSubstr("--drain_timeout_s"));
  EXPECT_THAT(ErrorOf({"--batch_length_ratio=0.5"}), HasSubstr(">= 1"));
  EXPECT_THAT(ErrorOf({"--batch_length_ratio=nan"}), HasSubstr("finite"));
  EXPECT_THAT(ErrorOf({"--drain_min_s=inf"}), HasSubstr("finite"));
  EXPECT_THAT(ErrorOf({"--max_batch_tokens=12abc"}), HasSubstr("integer"));
  EXPECT_THAT(ErrorOf({"--max_batch_tokens="}), HasSubstr("integer"));
  EXPECT_THAT(ErrorOf({"--max_batch_tokens=99999999999999999999"}), HasSubstr("integer"));
  EXPECT_THAT(ErrorOf({"--http_threads=0"}), HasSubstr("--http_threads"));
  EXPECT_THAT(ErrorOf({"--max_response_bytes=4294967296"}), HasSubstr("--max_response_bytes"));
  EXPECT_THAT(ErrorOf({"--log_level=loud"}), HasSubstr("debug, info, warning, error"));
  EXPECT_THAT(ErrorOf({"--warmup=maybe"}), HasSubstr("true or false"));
  EXPECT_THAT(ErrorOf({"--grpc_port"}), HasSubstr("needs a value"));
}

TEST(ServerConfigTest, UnknownFlagsAndArgumentsAreErrors) {
  EXPECT_THAT(ErrorOf({"--grpc_prot=1"}), HasSubstr("unknown flag --grpc_prot (did you mean --grpc_port?)"));
  EXPECT_THAT(ErrorOf({"--quantize=int8"}), HasSubstr("unknown flag --quantize"));
  EXPECT_THAT(ErrorOf({"--compute_type=fp8"}), HasSubstr("expected one of float32, bfloat16, int8, auto"));
  EXPECT_THAT(ErrorOf({"model"}), HasSubstr("unexpected argument 'model'"));
  EXPECT_THAT(ErrorOf({"-grpc_port=1"}), HasSubstr("unknown flag -grpc_port=1"));
}

TEST(ServerConfigTest, UnknownVariablesAreWarningsNamingTheNearestFlag) {
  ServerConfig config;
  absl::StatusOr<CommandLine> r = Parse(
      {}, {{"REFORMER_DRAIN_TIMEOUT_SECONDS", "30"}, {"REFORMER_WORKER", "2"}, {"REFORMER_SOURCE_DIR", "/src"}},
      &config);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->warnings.size(), 2u);
  EXPECT_THAT(r->warnings[0], HasSubstr("REFORMER_DRAIN_TIMEOUT_SECONDS matches no flag"));
  EXPECT_THAT(r->warnings[0], HasSubstr("nearest: REFORMER_DRAIN_TIMEOUT_S (--drain_timeout_s)"));
  EXPECT_THAT(r->warnings[1], HasSubstr("nearest: REFORMER_WORKERS (--workers)"));
  EXPECT_EQ(config.workers.workers, 0);
}

// REFORMER_TOKEN is reformer-cli's bearer token (README, reformer-cli); a pod or a shell that sets it
// for the client beside the server got a warning naming REFORMER_WORKERS as the "nearest" flag.
TEST(ServerConfigTest, TheClientsTokenVariableIsNoWarning) {
  ServerConfig config;
  absl::StatusOr<CommandLine> r = Parse({}, {{"REFORMER_TOKEN", "secret-token-value"}}, &config);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->warnings.empty()) << r->warnings[0];
}

TEST(ServerConfigTest, HelpListsEveryFlagWithItsVariable) {
  ServerConfig config;
  absl::StatusOr<CommandLine> r = Parse({"--help"}, {}, &config);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->help);
  const std::string usage = ServerUsage();
  EXPECT_THAT(usage, HasSubstr("usage: reformer-server [flags]"));
  ServerConfig defaults;
  FlagSet flags("x", "");
  flags.SetEnvironmentPrefix(kEnvironmentPrefix);
  RegisterServerFlags(&defaults, &flags);
  EXPECT_GE(flags.flags().size(), 29u);
  for (const auto& f : flags.flags()) {
    EXPECT_THAT(usage, HasSubstr("--" + f->name())) << f->name();
    EXPECT_THAT(usage, HasSubstr(flags.EnvironmentName(*f))) << f->name();
    for (const auto& g : flags.flags()) {
      if (f != g) {
        EXPECT_NE(f->name(), g->name()) << "declared twice";
      }
    }
  }
  EXPECT_THAT(usage, HasSubstr("--memory_budget_bytes=N"));
  EXPECT_THAT(usage, HasSubstr("[default: 4294967296 (4 GiB)]"));
}

TEST(ServerConfigTest, ResolveFillsEveryAutomaticValueInOnePlace) {
  ServerConfig small;
  small.model.dir = "/models/enwik8/";
  ASSERT_TRUE(ResolveServerConfig({4096, 2}, &small).ok());
  EXPECT_EQ(small.model.name, "enwik8");
  EXPECT_EQ(small.batching.max_batch_tokens, 65536);
  EXPECT_EQ(small.limits.max_tokens_per_request, 8 * 4096);
  EXPECT_EQ(small.workers.workers, 2);
  EXPECT_EQ(small.workers.threads_per_worker, 1);
  EXPECT_EQ(small.grpc.max_receive_message_bytes, 16 * 8 * 4096 + (1 << 20));
  EXPECT_EQ(small.grpc.max_send_message_bytes, (int64_t{512} << 20) + (1 << 20));
  EXPECT_EQ(small.grpc.stream_max_unsent_bytes, int64_t{64} << 20);  // 4 GiB budget / 64

  ServerConfig big;
  big.model.dir = "m";
  big.model.name = "served";
  big.workers.threads_per_worker = 2;
  ASSERT_TRUE(ResolveServerConfig({524288, 4}, &big).ok());
  EXPECT_EQ(big.model.name, "served");
  EXPECT_EQ(big.batching.max_batch_tokens, 524288);  // a full-context document always fits
  EXPECT_EQ(big.limits.max_tokens_per_request, 8 * 524288);
  EXPECT_EQ(big.workers.workers, 2);

  ServerConfig explicit_values;
  explicit_values.model.dir = "m";
  explicit_values.batching.max_batch_tokens = 5000;
  explicit_values.limits.max_tokens_per_request = 3000;
  explicit_values.batching.memory_budget_bytes = 256 << 20;
  ASSERT_TRUE(ResolveServerConfig({4096, 1}, &explicit_values).ok());
  EXPECT_EQ(explicit_values.batching.max_batch_tokens, 5000);
  EXPECT_EQ(explicit_values.limits.max_tokens_per_request, 3000);
  EXPECT_EQ(explicit_values.grpc.stream_max_unsent_bytes, 4 << 20);  // a stream's share of a small budget

  ServerConfig small_batches;  // a configuration error before anything starts, naming flag and minimum
  small_batches.model.dir = "m";
  small_batches.batching.max_batch_tokens = 10;
  const absl::Status below = ResolveServerConfig({4096, 1}, &small_batches);
  EXPECT_EQ(below.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(below.message()), HasSubstr("--max_batch_tokens=10 is below its minimum"));
  EXPECT_THAT(std::string(below.message()), HasSubstr("4096"));

  ServerConfig bad_name;
  bad_name.model.dir = "m";
  bad_name.model.name = "a/b";
  EXPECT_THAT(std::string(ResolveServerConfig({4096, 1}, &bad_name).message()), HasSubstr("--model_name"));
}

// Sanitizers replace glibc's malloc (mallopt and mallinfo2 mean nothing there): GCC says so with
// __SANITIZE_*__, clang with __has_feature.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define REFORMER_GLIBC_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define REFORMER_GLIBC_MALLOC 0
#endif
#endif
#ifndef REFORMER_GLIBC_MALLOC
#define REFORMER_GLIBC_MALLOC 1
#endif
#if REFORMER_GLIBC_MALLOC
// After a 16 MiB block (mapped on its own) is freed, glibc's dynamic threshold would be 16 MiB and
// the next 3 MiB block would come from an arena, which keeps its space when it is freed (the soak's
// growing idle RSS, docs/results/soak.md). With the thresholds fixed it is mapped on its own and
// unmapped on free (mallinfo2's count of mapped chunks goes up by one and back), while a 1 MiB
// working buffer stays in the arenas (mapping it afresh every time costs page faults).
size_t MappedChunksWhileHolding(size_t bytes) {
  char* volatile p = static_cast<char*>(std::malloc(bytes));
  std::memset(p, 1, bytes);
  const size_t mapped = mallinfo2().hblks;
  std::free(p);
  return mapped;
}

TEST(HostTest, LargeBlocksStayMappedAfterALargerOneIsFreed) {
  unsetenv("GLIBC_TUNABLES");
  unsetenv("MALLOC_MMAP_THRESHOLD_");
  unsetenv("MALLOC_TRIM_THRESHOLD_");
  ASSERT_TRUE(FixMallocThresholds());
  for (int round = 0; round < 2; ++round) {
    (void)MappedChunksWhileHolding(size_t{16} << 20);
    const size_t before = mallinfo2().hblks;
    EXPECT_EQ(MappedChunksWhileHolding(size_t{3} << 20), before + 1) << "a 3 MiB block came from an arena";
    EXPECT_EQ(mallinfo2().hblks, before);
    EXPECT_EQ(MappedChunksWhileHolding(size_t{1} << 20), before) << "a 1 MiB block was mapped";
  }
}

TEST(HostTest, MallocThresholdsChosenByTheOperatorStand) {
  setenv("MALLOC_MMAP_THRESHOLD_", "65536", 1);
  EXPECT_FALSE(FixMallocThresholds());
  unsetenv("MALLOC_MMAP_THRESHOLD_");
  setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576", 1);
  EXPECT_FALSE(FixMallocThresholds());
  unsetenv("GLIBC_TUNABLES");
  EXPECT_TRUE(FixMallocThresholds());
}
#endif

TEST(HostTest, CpuQuotaAndThreadDefaults) {
  EXPECT_EQ(ParseCpuMax("200000 100000\n"), 2);
  EXPECT_EQ(ParseCpuMax("150000 100000"), 2);
  EXPECT_EQ(ParseCpuMax("50000 100000"), 1);
  EXPECT_FALSE(ParseCpuMax("max 100000").has_value());
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "cgroup_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "cpu.max") << "100000 100000\n";
  EXPECT_EQ(AvailableCpus(dir.string()), 1);
  int w = 0, t = 0;
  ResolveThreads(2, &w, &t);
  EXPECT_EQ(w, 2);
  EXPECT_EQ(t, 1);
  w = 0, t = 0;
  ResolveThreads(8, &w, &t);
  EXPECT_EQ(w, 8);
  EXPECT_EQ(t, 1);
  w = 1, t = 0;
  ResolveThreads(4, &w, &t);
  EXPECT_EQ(t, 4);
  w = 0, t = 2;
  ResolveThreads(4, &w, &t);
  EXPECT_EQ(w, 2);
}

TEST(HostTest, DefaultModelSearchOrder) {
  const std::filesystem::path root = std::filesystem::path(::testing::TempDir()) / "install_test";
  std::filesystem::remove_all(root);
  const auto exe_dir = root / "build" / "bin";
  std::filesystem::create_directories(exe_dir);
  auto candidates = DefaultModelDirCandidates(exe_dir.string());
  ASSERT_EQ(candidates.size(), 4u);
  EXPECT_EQ(candidates[0], exe_dir.string() + "/../share/reformer-serve/models/default");
  EXPECT_EQ(candidates[1], exe_dir.string() + "/../../models/default");
  EXPECT_EQ(candidates[2], "/usr/share/reformer-serve/models/default");
  EXPECT_EQ(candidates[3], "/opt/reformer-serve/models/default");
  // The checkout layout (build/bin -> models/default) is found; an explicit --model_dir is kept.
  std::filesystem::create_directories(root / "models" / "default");
  std::ofstream(root / "models" / "default" / "config.json") << "{}";
  ServerConfig config;
  ASSERT_TRUE(ResolveModelDir(exe_dir.string(), &config).ok());
  EXPECT_EQ(config.model.dir, exe_dir.string() + "/../../models/default");
  config.model.dir = "/given";
  ASSERT_TRUE(ResolveModelDir(exe_dir.string(), &config).ok());
  EXPECT_EQ(config.model.dir, "/given");
  std::filesystem::remove_all(root / "models");
  auto missing = FindDefaultModelDir(exe_dir.string());
  if (!missing.ok()) {  // (a machine with /opt/reformer-serve installed finds that one)
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(missing.status().message()), HasSubstr("REFORMER_MODEL_DIR"));
  }
}

// README.md's configuration table is generated from RegisterServerFlags, between two markers.
// REFORMER_UPDATE_README=1 rewrites it in the source tree.
TEST(ServerConfigTest, ReadmeTableIsTheFlagList) {
  const char* source = std::getenv("REFORMER_SOURCE_DIR");
  ASSERT_NE(source, nullptr) << "REFORMER_SOURCE_DIR must name the source tree (ctest sets it)";
  const std::string path = std::string(source) + "/README.md";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string readme = ss.str();
  const std::string begin = "<!-- server flags: generated from server/config/server_config.cc -->\n";
  const std::string end = "<!-- end of server flags -->\n";
  const size_t b = readme.find(begin), e = readme.find(end);
  ASSERT_NE(b, std::string::npos) << "README.md lacks the line " << begin;
  ASSERT_NE(e, std::string::npos) << "README.md lacks the line " << end;
  ASSERT_LT(b, e);
  // A blank line before the table so Markdown renders it as a table.
  ASSERT_TRUE(b >= 2 && readme.compare(b - 2, 2, "\n\n") == 0) << "no blank line before the table";
  const std::string want = ServerFlagsMarkdown() + "\n";  // a blank line ends the table
  const std::string have = readme.substr(b + begin.size(), e - b - begin.size());
  if (have != want && std::getenv("REFORMER_UPDATE_README") != nullptr) {
    readme.replace(b + begin.size(), e - b - begin.size(), want);
    std::ofstream(path) << readme;
    GTEST_SUCCEED() << "rewrote " << path;
    return;
  }
  EXPECT_EQ(have, want) << "README.md's flag table differs from the flag list; regenerate it with\n"
                        << "  REFORMER_UPDATE_README=1 REFORMER_SOURCE_DIR=$PWD build/tests/server_config_test "
                           "--gtest_filter='*Readme*'";
}

}  // namespace
}  // namespace reformer::serving
