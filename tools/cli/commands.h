// reformer-cli's commands: each command's options struct and its flags, declared once (commands.cc),
// parsed strictly by reformer::FlagSet (engine/base/flags.h): an unknown flag, a malformed number or
// a missing argument prints the command's usage to stderr and exits 2; --help prints it to stdout.
//
// One rule for where a command runs: a command that can run offline does so when given --model DIR;
// every other invocation talks to a running reformer-server at --server (default localhost:8001).
// Adding a command: an options struct and a Register function here, its Run function, and one row
// in main.cc's command table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/base/flags.h"

namespace reformer::cli {

inline constexpr char kDefaultServer[] = "localhost:8001";

// Flags shared by every command that talks to a server.
// The bearer token (a server run with --auth_tokens_file wants `authorization: Bearer <token>` on
// every call): the first line of --token_file, else the environment variable REFORMER_TOKEN, else
// none. Sent on every RPC of the command.
struct ClientOptions {
  std::string server = kDefaultServer;
  double timeout_s = 600;
  std::string token_file;
};

inline constexpr char kTokenEnv[] = "REFORMER_TOKEN";

struct ForwardOptions {
  std::string model;
  std::string inputs;
  std::string output;
  bool per_document = false;
  int threads = 0;  // 0 = every core
  std::string compute_type = "float32";  // docs/isa.md §3
  bool timing = false;  // one line on stderr: each phase's wall, CPU and page faults
};

struct ScoreOptions {
  std::string model;  // set: offline; empty: on the server
  ClientOptions client;
  bool json = false;
  int threads = 0;     // offline only; 0 = every core
  std::string compute_type = "float32";  // offline only; docs/isa.md §3
  int64_t window = 0;  // tokens per independent window; 0 = the model's context
  std::vector<std::string> files;
};

struct InfoOptions {
  ClientOptions client;
  bool json = false;
};

struct EmbedOptions {
  ClientOptions client;
  bool normalize = false;
  int64_t piece_bytes = 0;  // 0 = from the model's context
  std::vector<std::string> files;
};

void RegisterClientFlags(ClientOptions* o, FlagSet* flags);
void RegisterComputeTypeFlag(std::string* compute_type, FlagSet* flags);
void RegisterForwardFlags(ForwardOptions* o, FlagSet* flags);
void RegisterScoreFlags(ScoreOptions* o, FlagSet* flags);
void RegisterInfoFlags(InfoOptions* o, FlagSet* flags);
void RegisterEmbedFlags(EmbedOptions* o, FlagSet* flags);

// Offline (tools/cli/offline.cc).
int RunForward(const ForwardOptions& o);
int RunScoreOffline(const ScoreOptions& o);

// Against a server (tools/cli/client.cc; only in builds with gRPC).
int RunHealth(const ClientOptions& o);
int RunInfo(const InfoOptions& o);
int RunScoreOnServer(const ScoreOptions& o);
int RunEmbed(const EmbedOptions& o);

}  // namespace reformer::cli
