#include "server/config/host.h"

#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace reformer::serving {
namespace {

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsFile(const std::string& path) {
  std::ifstream in(path);
  return static_cast<bool>(in);
}

}  // namespace

std::optional<int> ParseCpuMax(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(absl::StripAsciiWhitespace(text), ' ',
                                                  absl::SkipEmpty());
  if (parts.size() != 2) return std::nullopt;
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(parts[0], &quota) || !absl::SimpleAtoi(parts[1], &period)) {
    return std::nullopt;  // "max 100000" = no limit
  }
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<int>(std::max<int64_t>(1, (quota + period - 1) / period));
}

int AvailableCpus(const std::string& cgroup_root) {
  int cores = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  cores = std::max(cores, 1);
  std::optional<int> quota;
  if (auto v2 = ReadFile(cgroup_root + "/cpu.max")) {
    quota = ParseCpuMax(*v2);
  } else {
    auto q = ReadFile(cgroup_root + "/cpu/cpu.cfs_quota_us");
    auto p = ReadFile(cgroup_root + "/cpu/cpu.cfs_period_us");
    if (q && p) {
      quota = ParseCpuMax(absl::StrCat(absl::StripAsciiWhitespace(*q), " ",
                                       absl::StripAsciiWhitespace(*p)));
    }
  }
  return quota ? std::min(*quota, cores) : cores;
}

void ResolveThreads(int cpus, int* workers, int* threads_per_worker) {
  cpus = std::max(cpus, 1);
  if (*workers <= 0 && *threads_per_worker <= 0) {
    *workers = cpus;
  } else if (*workers <= 0) {
    *workers = std::max(1, cpus / *threads_per_worker);
  }
  if (*threads_per_worker <= 0) *threads_per_worker = std::max(1, cpus / *workers);
}

std::vector<std::string> DefaultModelDirCandidates(const std::string& exe_dir) {
  std::vector<std::string> out;
  if (!exe_dir.empty()) {
    out.push_back(exe_dir + "/../share/reformer-serve/models/default");
    out.push_back(exe_dir + "/../../models/default");
  }
  out.push_back("/usr/share/reformer-serve/models/default");
  out.push_back("/opt/reformer-serve/models/default");
  return out;
}

absl::StatusOr<std::string> FindDefaultModelDir(const std::string& exe_dir) {
  std::vector<std::string> candidates = DefaultModelDirCandidates(exe_dir);
  for (const std::string& dir : candidates) {
    if (IsFile(dir + "/config.json")) return dir;
  }
  return absl::NotFoundError(absl::StrCat(
      "no --model_dir (REFORMER_MODEL_DIR) given and no bundled default model found (looked for config.json in: ",
      absl::StrJoin(candidates, ", "), ")"));
}

bool FixMallocThresholds() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr || std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr ||
      (tunables != nullptr && (std::strstr(tunables, "glibc.malloc.mmap_threshold") != nullptr ||
                               std::strstr(tunables, "glibc.malloc.trim_threshold") != nullptr)))
    return false;  // the operator's choice stands
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, kMallocMmapThresholdBytes) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, kMallocTrimThresholdBytes) == 1;
  return mmap_ok && trim_ok;
}

std::string ExecutableDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

}  // namespace reformer::serving
