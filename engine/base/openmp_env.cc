#include "engine/base/openmp_env.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace reformer {
namespace {

// Executing /proc/self/exe names the new process "exe" (the kernel takes the name from the path it
// executed), so ps/top would show "exe". Give it back the name it was started under.
void RestoreProcessName(const char* argv0) {
  if (argv0 == nullptr) return;
  std::ifstream comm("/proc/self/comm");
  std::string current;
  if (!std::getline(comm, current) || current != "exe") return;
  const char* slash = std::strrchr(argv0, '/');
  const std::string name = std::string(slash != nullptr ? slash + 1 : argv0).substr(0, 15);  // TASK_COMM_LEN - 1
  if (!name.empty()) prctl(PR_SET_NAME, name.c_str(), 0, 0, 0);
}

}  // namespace

void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) {
    RestoreProcessName(argv[0]);
    return;
  }
  setenv("OMP_WAIT_POLICY", "passive", 1);
  // /proc/self/exe rather than argv[0]: the very same binary, wherever it was found and even if
  // the file has been replaced since.
  execv("/proc/self/exe", argv);
  std::perror("execv /proc/self/exe (continuing with the default OpenMP wait policy)");
}

}  // namespace reformer
