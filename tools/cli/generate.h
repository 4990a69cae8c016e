// reformer-cli command `generate`: offline with the engine (--model DIR) or on a running
// reformer-server (--server HOST:PORT, reformer.v1 Generate); docs/generation.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/generation.h"

namespace reformer::cli {

// reformer-cli generate (--model DIR | --server ADDR) (--inputs FILE.json | --prompt TEXT)
//     --max_new_tokens N [...]
int RunGenerate(int argc, char** argv);

// What `generate --server` sends: the text prompt, or else one request per row of ids.
struct ServerGenerate {
  std::string server;
  bool has_text = false;
  std::string text;
  std::vector<std::vector<int32_t>> prompts;
  GenerationParams params;  // seed 0 = the server picks one (printed on stderr)
  bool json = false, logprobs = false;
  double timeout_s = 600;
  std::string token_file;  // ClientOptions::token_file
};

// tools/cli/client.cc (builds with gRPC only): streams each prompt's text (its ids when the model
// has no tokenizer) to stdout as it comes, or with `json` one object per prompt and line.
int RunGenerateOnServer(const ServerGenerate& g);

}  // namespace reformer::cli
