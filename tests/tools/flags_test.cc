// engine/base/flags.h: the strict flag parser every program uses (reformer-server, reformer-cli,
// reformer_bench, offline_throughput).
#include "engine/base/flags.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reformer {
namespace {

using ::testing::HasSubstr;
using Args = std::vector<std::string>;

struct Options {
  std::string model;
  std::string mode = "fast";
  int threads = 0;
  int64_t window = 0;
  double timeout = 600;
  bool json = false;
  bool warmup = true;
  std::vector<std::string> files;
};

class FlagsTest : public ::testing::Test {
 protected:
  FlagsTest() : flags_("tool run [flags] FILE...", "Runs.") {
    flags_.Add("model", &o_.model, "Model directory.").Meta("DIR");
    flags_.Add("mode", &o_.mode, "Mode.").OneOf({"fast", "exact"});
    flags_.Add("threads", &o_.threads, "Threads.").Range(0, 64);
    flags_.Add("piece-window", &o_.window, "Window.").Min(2);
    flags_.Add("timeout", &o_.timeout, "Seconds.").MinReal(0.001);
    flags_.Add("json", &o_.json, "JSON.");
    flags_.Add("warmup", &o_.warmup, "Warm up.");
    flags_.Positional("FILE...", &o_.files, "Files.", 1);
  }
  std::string Error(Args args) {
    absl::Status s = flags_.Parse(args);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  }
  Options o_;
  FlagSet flags_;
};

TEST_F(FlagsTest, ParsesEveryForm) {
  ASSERT_TRUE(flags_.Parse(Args{"--model", "m", "--threads=4", "--piece_window", "16", "--json", "--nowarmup",
                                "--timeout=2.5", "a.txt", "--", "--b.txt"})
                  .ok());
  EXPECT_EQ(o_.model, "m");
  EXPECT_EQ(o_.threads, 4);
  EXPECT_EQ(o_.window, 16);  // '-' and '_' are the same in names
  EXPECT_TRUE(o_.json);
  EXPECT_FALSE(o_.warmup);
  EXPECT_EQ(o_.timeout, 2.5);
  EXPECT_EQ(o_.files, (std::vector<std::string>{"a.txt", "--b.txt"}));
  EXPECT_FALSE(flags_.help_requested());
  EXPECT_TRUE(flags_.Find("model")->was_set());
  EXPECT_FALSE(flags_.Find("mode")->was_set());
}

TEST_F(FlagsTest, DefaultsStayAndTheLastValueWins) {
  ASSERT_TRUE(flags_.Parse(Args{"--threads=1", "--threads=3", "x"}).ok());
  EXPECT_EQ(o_.threads, 3);
  EXPECT_EQ(o_.mode, "fast");
  EXPECT_EQ(o_.timeout, 600);
  EXPECT_TRUE(o_.warmup);
}

TEST_F(FlagsTest, RejectsWhatItDoesNotUnderstand) {
  EXPECT_THAT(Error({"--compute_type=fp8", "x"}), HasSubstr("unknown flag --compute_type"));
  EXPECT_THAT(Error({"--thread=2", "x"}), HasSubstr("did you mean --threads?"));
  EXPECT_THAT(Error({"-t", "2", "x"}), HasSubstr("unknown flag -t"));
  EXPECT_THAT(Error({"--threads=2x", "x"}), HasSubstr("--threads=2x: expected an integer"));
  EXPECT_THAT(Error({"--threads= 2", "x"}), HasSubstr("expected an integer"));
  EXPECT_THAT(Error({"--threads", "0x10", "x"}), HasSubstr("expected an integer"));
  EXPECT_THAT(Error({"--threads=65", "x"}), HasSubstr("in [0, 64]"));
  EXPECT_THAT(Error({"--threads=-1", "x"}), HasSubstr("in [0, 64]"));
  EXPECT_THAT(Error({"--threads=99999999999", "x"}), HasSubstr("in [0, 64]"));
  EXPECT_THAT(Error({"--piece-window=1", "x"}), HasSubstr(">= 2"));
  EXPECT_THAT(Error({"--timeout=0", "x"}), HasSubstr(">= 0.001"));
  EXPECT_THAT(Error({"--timeout=inf", "x"}), HasSubstr("finite"));
  EXPECT_THAT(Error({"--timeout=1s", "x"}), HasSubstr("finite number"));
  EXPECT_THAT(Error({"--mode=slow", "x"}), HasSubstr("one of fast, exact"));
  EXPECT_THAT(Error({"--json=maybe", "x"}), HasSubstr("true or false"));
  EXPECT_THAT(Error({"--nojson=true", "x"}), HasSubstr("takes no value"));
  EXPECT_THAT(Error({"--model"}), HasSubstr("--model needs a value"));
  EXPECT_THAT(Error({"--json"}), HasSubstr("missing FILE..."));
}

TEST(FlagSetTest, RealFlagsHonourAnUpperBound) {
  double seconds = 1;
  FlagSet flags("tool [flags]", "");
  flags.Add("drain_s", &seconds, "Seconds.").RangeReal(0, 86400);
  EXPECT_TRUE(flags.Parse(Args{"--drain_s=86400"}).ok());
  EXPECT_EQ(seconds, 86400);
  const absl::Status huge = flags.Parse(Args{"--drain_s=1e308"});
  EXPECT_THAT(std::string(huge.message()), HasSubstr("--drain_s=1e308: must be <= 86400"));
  EXPECT_EQ(seconds, 86400);  // a refused value leaves the flag as it was
  EXPECT_EQ(flags.Find("drain_s")->Constraint(), "a number in [0, 86400]");
}

TEST(FlagSetTest, RepeatableFlagsCollectEveryValue) {
  std::vector<std::string> stop;
  FlagSet flags("tool [flags]", "");
  flags.Add("stop", &stop, "Stop string (repeatable).");
  ASSERT_TRUE(flags.Parse(Args{"--stop", "a", "--stop=b c", "--stop", ""}).ok());
  EXPECT_EQ(stop, (std::vector<std::string>{"a", "b c", ""}));
  EXPECT_THAT(flags.Usage(), HasSubstr("--stop=STRING"));
}

TEST(FlagSetTest, RequiredFlagsAndStrayArguments) {
  std::string model;
  FlagSet flags("tool [flags]", "");
  flags.Add("model", &model, "Model.").Required();
  EXPECT_THAT(std::string(flags.Parse(Args{}).message()), HasSubstr("missing --model"));
  EXPECT_THAT(std::string(flags.Parse(Args{"--model=m", "extra"}).message()), HasSubstr("unexpected argument 'extra'"));
  EXPECT_TRUE(flags.Parse(Args{"--model=m"}).ok());
  FlagSet help("tool [flags]", "");
  help.Add("model", &model, "Model.").Required();
  ASSERT_TRUE(help.Parse(Args{"--help"}).ok());  // help needs nothing else
  EXPECT_TRUE(help.help_requested());
}

TEST(FlagSetTest, UsageShowsDefaultsRangesAndVariables) {
  int64_t budget = int64_t{4} << 30;
  int port = 8001;
  bool on = true;
  std::string name;
  FlagSet flags("server [flags]", "Serves.");
  flags.SetEnvironmentPrefix("APP_");
  flags.Add("memory_budget_bytes", &budget, "Budget.").Min(1);
  flags.Add("grpc_port", &port, "Port | gRPC.").Range(0, 65535).Meta("PORT");
  flags.Add("warmup", &on, "Warm up.");
  flags.Add("name", &name, "Name.");
  const std::string usage = flags.Usage();
  EXPECT_THAT(usage, HasSubstr("usage: server [flags]\n\nServes.\n"));
  EXPECT_THAT(usage, HasSubstr("--memory_budget_bytes=N"));
  EXPECT_THAT(usage, HasSubstr("[default: 4294967296 (4 GiB)]"));
  EXPECT_THAT(usage, HasSubstr("--grpc_port=PORT"));
  EXPECT_THAT(usage, HasSubstr("[env APP_GRPC_PORT]"));
  EXPECT_THAT(usage, HasSubstr("[default: \"\"]"));
  EXPECT_THAT(usage, HasSubstr("-h, --help"));
  const std::string table = flags.MarkdownTable();
  EXPECT_THAT(table, HasSubstr("| flag | environment | default | meaning |"));
  EXPECT_THAT(table, HasSubstr("| `--grpc_port` | `APP_GRPC_PORT` | `8001` | Port \\| gRPC. Allowed: an integer in "
                               "[0, 65535]. |"));
  EXPECT_THAT(table, HasSubstr("`4294967296` (4 GiB)"));
}

TEST(FlagSetTest, EnvironmentThenCommandLine) {
  int port = 8001;
  int workers = 0;
  FlagSet flags("server [flags]", "");
  flags.SetEnvironmentPrefix("APP_");
  flags.Add("grpc_port", &port, "Port.").Range(0, 65535);
  flags.Add("workers", &workers, "Workers.").Min(0);
  std::vector<std::string> warnings;
  const std::vector<std::pair<std::string, std::string>> env = {
      {"APP_GRPC_PORT", "9000"}, {"APP_WORKER", "3"}, {"APP_KNOWN", "x"}, {"HOME", "/root"}};
  ASSERT_TRUE(flags.ApplyEnvironment(env, {"APP_KNOWN"}, &warnings).ok());
  EXPECT_EQ(port, 9000);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("APP_WORKER matches no flag and is ignored; nearest: APP_WORKERS (--workers)"));
  ASSERT_TRUE(flags.Parse(Args{"--grpc_port=1"}).ok());
  EXPECT_EQ(port, 1);
  warnings.clear();
  absl::Status bad = flags.ApplyEnvironment({{"APP_GRPC_PORT", "-4"}}, {}, &warnings);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("APP_GRPC_PORT='-4' (--grpc_port)"));
}

TEST(FlagSetTest, EditDistance) {
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(EditDistance("grpc_prot", "grpc_port"), 2u);
  EXPECT_EQ(Nearest("REFORMER_WORKER", {"REFORMER_WORKERS", "REFORMER_GRPC_PORT"}), "REFORMER_WORKERS");
  EXPECT_EQ(Nearest("x", {}), "");
}

}  // namespace
}  // namespace reformer
