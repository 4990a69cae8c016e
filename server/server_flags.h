// Helpers for reformer-server's configuration: environment-variable flag defaults, the CPU quota,
// thread defaults and the default model directory. Pure functions of their inputs (testable).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reformer::serving {

// Environment variable for a flag: "grpc_port" -> "REFORMER_GRPC_PORT".
std::string FlagEnvName(const std::string& flag);

// For every registered flag in `flags`, parses REFORMER_<FLAG> from `getenv` (when set) as the
// flag's value, before the command line is parsed (so the command line wins). INVALID_ARGUMENT
// naming the variable when a value does not parse.
absl::Status ApplyEnvironmentToFlags(const std::vector<std::string>& flags,
                                     const std::function<const char*(const char*)>& getenv);

// CPUs this process may use: the cgroup v2 quota (`<cgroup_root>/cpu.max`, "quota period"), else
// the cgroup v1 CFS quota, rounded up; else the affinity/core count. Never below 1.
int AvailableCpus(const std::string& cgroup_root = "/sys/fs/cgroup");
// Parses a cgroup v2 cpu.max line; nullopt for "max ..." or junk.
std::optional<int> ParseCpuMax(const std::string& text);

// Fills workers/threads_per_worker that are 0 ("auto") so that workers * threads <= cpus:
// by default one single-threaded worker per CPU (each worker owns a session; with >= 2 workers
// short requests keep moving while a long document runs, and single-threaded sessions do not
// stall on OpenMP barriers when cores are shared); otherwise the given count and cpus / it.
void ResolveThreads(int cpus, int* workers, int* threads_per_worker);

// The bundled default model, searched in order: $REFORMER_MODEL_DIR,
// <exe_dir>/../share/reformer-serve/models/default, <exe_dir>/../../models/default,
// /usr/share/reformer-serve/models/default, /opt/reformer-serve/models/default.
// A candidate counts when it holds config.json. NOT_FOUND lists every place looked at.
std::vector<std::string> DefaultModelDirCandidates(const std::string& exe_dir, const char* env_dir);
absl::StatusOr<std::string> FindDefaultModelDir(const std::string& exe_dir, const char* env_dir);

// Directory of the running executable (/proc/self/exe), "" if unknown.
std::string ExecutableDir();

}  // namespace reformer::serving
