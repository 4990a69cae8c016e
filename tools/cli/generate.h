// reformer-cli command `generate`: offline with the engine (--model DIR) or on a running
// reformer-server (--server HOST:PORT, default localhost:8001; reformer.v1 Generate);
// docs/generation.md. Flags are declared once (RegisterGenerateFlags) and parsed by the strict
// FlagSet like every other command (tools/cli/commands.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/base/flags.h"
#include "engine/model/generation.h"
#include "tools/cli/commands.h"

namespace reformer::cli {

struct GenerateCommandOptions {
  std::string model;  // set: offline; empty: on the server
  ClientOptions client;
  std::string inputs, prompt;
  int64_t max_new_tokens = 0;
  std::string mode = "cached";
  double temperature = 0, top_p = 1;
  int top_k = 0;
  std::string seed = "0";  // a uint64; 0 = pick one (offline here, else the server) and report it
  std::vector<std::string> stop;
  bool ignore_eos = false, json = false, logprobs = false;
  int threads = 0;                       // offline only; 0 = every core
  std::string compute_type = "float32";  // offline only; docs/isa.md §3
};

void RegisterGenerateFlags(GenerateCommandOptions* o, FlagSet* flags);
// Runs `generate` after RegisterGenerateFlags' flags were parsed into `o`.
int RunGenerate(FlagSet& flags, GenerateCommandOptions& o);

// What `generate --server` sends: the text prompt, or else one request per row of ids.
struct ServerGenerate {
  ClientOptions client;
  bool has_text = false;
  std::string text;
  std::vector<std::vector<int32_t>> prompts;
  GenerationParams params;  // seed 0 = the server picks one (reported with the result)
  bool json = false, logprobs = false;
};

// tools/cli/client.cc (builds with gRPC only): streams each prompt's text (its ids when the model
// has no tokenizer) to stdout as it comes, or with `json` one object per prompt and line.
int RunGenerateOnServer(const ServerGenerate& g);

}  // namespace reformer::cli
