// OpenMP runtime settings that must be in place before libgomp loads.
#pragma once

namespace reformer {

// libgomp reads OMP_WAIT_POLICY once, when it is loaded (before main). Spinning OpenMP barriers
// collapse throughput when threads share cores (measured 2x-15x slower on 2 busy cores), so unless
// the operator chose a policy, re-execute this process once with OMP_WAIT_POLICY=passive.
// Call first thing in main(), before any thread exists. Returns only when no re-exec happened
// (policy already set, or exec failed — then the process continues with the default policy).
// After the re-exec the process keeps the name it was started under (ps, top, /proc/<pid>/comm)
// rather than the kernel's "exe".
void EnsurePassiveOpenMpWait(char** argv);

}  // namespace reformer
