#include "engine/base/openmp_env.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace reformer {

void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);
  std::perror("execv /proc/self/exe (continuing with the default OpenMP wait policy)");
}

}  // namespace reformer
