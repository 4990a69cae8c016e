// reformer-cli: offline engine runs and a client for a running reformer-server.
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/base/openmp_env.h"
#include "tools/cli/offline.h"
#ifdef REFORMER_CLI_HAS_CLIENT
#include "tools/cli/client.h"
#endif

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: reformer-cli <command> [flags]\n"
               "\n"
               "Offline (no server):\n"
               "  forward --model DIR --inputs FILE.json --output OUT.safetensors [--per-document] [--threads N]\n"
               "      Run the model on input_ids [B][T] (+ optional attention_mask) and write float32 logits\n"
               "      [B,T,V] and hidden_states [B,T,2H]. Default: Hugging Face padded-batch semantics;\n"
               "      --per-document: each row's real tokens are one document computed as if alone.\n"
               "  (forward and score: --compute_type float32|bfloat16|int8|auto, default float32 = exact;\n"
               "   a type this CPU cannot run is an error naming the missing instruction set)\n"
               "  score --model DIR [--json] [--threads N] [--window TOKENS] FILE...\n"
               "      Bits per byte and perplexity of each text file under a causal model; texts longer\n"
               "      than the context (or --window) are scored in independent windows.\n"
#ifdef REFORMER_CLI_HAS_CLIENT
               "\n"
               "Client (talks to a running reformer-server, --server host:port, default localhost:8001):\n"
               "  health | info | score FILE... --server H:P | embed FILE... --server H:P\n"
               "  (run `reformer-cli help-client` for the full list)\n"
#endif
  );
}

}  // namespace

int main(int argc, char** argv) {
  reformer::EnsurePassiveOpenMpWait(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  bool to_server = false;
  for (int i = 2; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--server", 8)) to_server = true;
  }
#ifdef REFORMER_CLI_HAS_CLIENT
  if (to_server || (cmd != "forward" && cmd != "score")) {
    return reformer::cli::RunClientCommand(cmd, argc - 2, argv + 2);
  }
#else
  if (to_server) {
    std::fprintf(stderr, "reformer-cli: this build has no client support\n");
    return 2;
  }
#endif
  if (cmd == "forward") return reformer::cli::RunForward(argc - 2, argv + 2);
  if (cmd == "score") return reformer::cli::RunScore(argc - 2, argv + 2);
  std::fprintf(stderr, "reformer-cli: unknown command '%s'\n\n", cmd.c_str());
  Usage();
  return 2;
}
