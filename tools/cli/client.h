// Client commands of reformer-cli (talk to a running reformer-server over gRPC).
// Implemented in client.cc (built into reformer-cli when present).
#pragma once

#include <string>

namespace reformer::cli {

// `cmd` is the subcommand (e.g. "health", "info", "score", "embed"); argv holds the remaining
// arguments (flags such as --server host:port, files). Returns the process exit code.
int RunClientCommand(const std::string& cmd, int argc, char** argv);

}  // namespace reformer::cli
