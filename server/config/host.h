// What the host tells reformer-server's configuration: the CPU quota, thread defaults, the bundled
// default model's directory. Pure functions of their inputs (testable).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reformer::serving {

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

// The bundled default model, searched in order (when --model_dir / REFORMER_MODEL_DIR is empty):
// <exe_dir>/../share/reformer-serve/models/default, <exe_dir>/../../models/default (a checkout's
// build/bin), /usr/share/reformer-serve/models/default, /opt/reformer-serve/models/default.
// A candidate counts when it holds config.json. NOT_FOUND lists every place looked at.
std::vector<std::string> DefaultModelDirCandidates(const std::string& exe_dir);
absl::StatusOr<std::string> FindDefaultModelDir(const std::string& exe_dir);

// glibc's malloc serves a request of at least its mmap threshold (128 KiB at start) with a mapping of
// its own, unmapped on free -- but after freeing such a chunk it raises the threshold to that chunk's
// size (up to 32 MiB) and the trim threshold to twice it. After the first large response was freed,
// the server's multi-MiB transient buffers (responses, outputs, gRPC messages) came from the arenas,
// which keep the free space between live chunks: in 10-minute soaks the idle server's malloc held
// ~58 MiB with ~8 MiB in use, and the idle RSS kept stepping up (docs/results/soak.md, "Why the RSS
// grew"). Fixes the mmap threshold at 2 MiB and the trim threshold at 4 MiB (mallopt; a fixed value
// turns the raising off): larger blocks are mapped and returned on free, smaller ones -- the engine's
// working buffers of up to 1 MiB (engine/tensor/workspace.h), reused forward after forward -- stay in
// the arenas. (At glibc's initial 128 KiB those working buffers were mapped and faulted in afresh
// every time: 15x the page faults and ~30 % of the server's CPU in the kernel; docs/results/soak.md.)
// Leaves them alone when the operator chose them (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, or
// glibc.malloc.*_threshold in GLIBC_TUNABLES). Call before threads start. Returns whether it set them.
inline constexpr int kMallocMmapThresholdBytes = 2 << 20;
inline constexpr int kMallocTrimThresholdBytes = 4 << 20;
bool FixMallocThresholds();

// Directory of the running executable (/proc/self/exe), "" if unknown.
std::string ExecutableDir();

}  // namespace reformer::serving
