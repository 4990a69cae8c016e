// reformer-cli: offline engine runs and a client for a running reformer-server.
// Commands and their flags: tools/cli/commands.h. Help goes to stdout (exit 0); usage errors to
// stderr (exit 2).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "engine/base/flags.h"
#include "engine/base/openmp_env.h"
#include "tools/cli/commands.h"
#include "tools/cli/generate.h"

namespace reformer::cli {
namespace {

using Args = std::vector<std::string>;

#ifdef REFORMER_CLI_HAS_CLIENT
constexpr bool kHasClient = true;
#else
constexpr bool kHasClient = false;
#endif

struct Command {
  const char* name;
  const char* synopsis;     // after "usage: "
  const char* summary;      // one line in the command list
  const char* description;  // the command's --help
  bool needs_client;        // talks to a server only
  int (*run)(const Command& command, const Args& args);
};

// Parses `args` for one command: `register_flags` declares the flags on `options`; `run` gets them.
template <typename Options>
int ParseAndRun(const Command& command, const Args& args, void (*register_flags)(Options*, FlagSet*),
                int (*run)(FlagSet& flags, Options& options)) {
  Options options;
  FlagSet flags(command.synopsis, command.description);
  register_flags(&options, &flags);
  if (std::optional<int> exit_code = flags.ParseOrExit(args)) return *exit_code;
  return run(flags, options);
}

int UsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "reformer-cli: %s\n(reformer-cli %s --help lists its flags)\n", message.c_str(),
               command.c_str());
  return 2;
}

// score: offline with --model, else on --server (see commands.h).
int Score(FlagSet& flags, ScoreOptions& o) {
  if (o.window == 1) return UsageError("score", "--window must be 0 (the model's context) or at least 2 tokens");
  if (!o.model.empty()) {
    if (flags.Find("server")->was_set()) return UsageError("score", "give --model (offline) or --server, not both");
    if (flags.Find("timeout")->was_set()) return UsageError("score", "--timeout applies to --server only");
    return RunScoreOffline(o);
  }
  if (flags.Find("threads")->was_set()) return UsageError("score", "--threads applies to offline scoring (--model)");
  if (!kHasClient) return UsageError("score", "this build has no client support; score offline with --model DIR");
  return RunScoreOnServer(o);
}

const std::vector<Command>& Commands() {
  static const auto* const kCommands = new std::vector<Command>{
      {"forward", "reformer-cli forward [flags]",
       "Run the model offline on input_ids [B][T]; write float32 logits and hidden states.",
       "Run the model offline on input_ids [B][T] (+ optional attention_mask) and write float32 logits "
       "[B,T,V] and hidden_states [B,T,2H].",
       false,
       [](const Command& c, const Args& a) {
         return ParseAndRun<ForwardOptions>(c, a, RegisterForwardFlags,
                                            [](FlagSet&, ForwardOptions& o) { return RunForward(o); });
       }},
      {"score", "reformer-cli score [flags] FILE...",
       "Bits per byte of text files: offline with --model DIR, else on --server.",
       "Bits per byte and perplexity of each text file under a causal model: offline with --model DIR, "
       "otherwise on a running server (--server, default localhost:8001). Texts longer than the context (or "
       "--window) are scored in independent windows; both ways print the same figures.",
       false,
       [](const Command& c, const Args& a) { return ParseAndRun<ScoreOptions>(c, a, RegisterScoreFlags, Score); }},
      {"generate", "reformer-cli generate [flags]",
       "Generate text offline with --model DIR, else on --server: HF-exact decoding, sampling.",
       "Generate text from a prompt (--prompt TEXT, or rows of ids in --inputs FILE.json) with the engine offline "
       "(--model DIR) or on a running server (--server, default localhost:8001; streamed as it is decoded). "
       "The same flags and --seed give the same tokens both ways; seed 0 picks one and reports it "
       "(docs/generation.md).",
       false,
       [](const Command& c, const Args& a) {
         return ParseAndRun<GenerateCommandOptions>(c, a, RegisterGenerateFlags, RunGenerate);
       }},
      {"health", "reformer-cli health [flags]", "Liveness and readiness of a server; exit 0 when ready.",
       "Liveness and readiness of a running server; exit 0 when ready.", true,
       [](const Command& c, const Args& a) {
         return ParseAndRun<ClientOptions>(c, a, RegisterClientFlags,
                                           [](FlagSet&, ClientOptions& o) { return RunHealth(o); });
       }},
      {"info", "reformer-cli info [flags]", "The served model: name, context, vocabulary, layers.",
       "The served model: name, context, vocabulary, layers.", true,
       [](const Command& c, const Args& a) {
         return ParseAndRun<InfoOptions>(c, a, RegisterInfoFlags, [](FlagSet&, InfoOptions& o) { return RunInfo(o); });
       }},
      {"embed", "reformer-cli embed [flags] FILE...", "One JSON line per file: its mean final hidden state.",
       "One JSON line per file: the mean final hidden state over its tokens, computed by a running server.", true,
       [](const Command& c, const Args& a) {
         return ParseAndRun<EmbedOptions>(c, a, RegisterEmbedFlags,
                                          [](FlagSet&, EmbedOptions& o) { return RunEmbed(o); });
       }},
  };
  return *kCommands;
}

void Usage(FILE* out) {
  std::fprintf(out, "usage: reformer-cli <command> [flags]\n\ncommands:\n");
  for (const Command& c : Commands()) {
    if (c.needs_client && !kHasClient) continue;
    std::fprintf(out, "  %-8s %s\n", c.name, c.summary);
  }
  std::fprintf(out,
               "\nA command that can run offline does so with --model DIR; every other invocation talks to a "
               "running\nreformer-server at --server HOST:PORT (default %s).\n"
               "`reformer-cli <command> --help` (or `reformer-cli help <command>`) lists a command's flags.\n",
               kDefaultServer);
}

int Main(int argc, char** argv) {
  EnsurePassiveOpenMpWait(argv);
  const Args args(argv + 1, argv + argc);
  if (args.empty()) {
    Usage(stderr);
    return 2;
  }
  std::string name = args[0];
  Args rest(args.begin() + 1, args.end());
  if (name == "--help" || name == "-h" || name == "help" || name == "help-client") {
    if (name != "help" || rest.empty()) {
      Usage(stdout);
      return 0;
    }
    name = rest[0];
    rest = {"--help"};
  }
  for (const Command& c : Commands()) {
    if (name != c.name || (c.needs_client && !kHasClient)) continue;
    return c.run(c, rest);
  }
  std::fprintf(stderr, "reformer-cli: unknown command '%s'\n\n", name.c_str());
  Usage(stderr);
  return 2;
}

}  // namespace
}  // namespace reformer::cli

int main(int argc, char** argv) { return reformer::cli::Main(argc, argv); }
