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

// The same default without a second process start: sets OMP_WAIT_POLICY=passive unless the operator
// chose a policy. It must run before libgomp's initializer, which only an executable's
// .preinit_array guarantees (the dynamic loader runs that array before any shared library's
// initializer); REFORMER_PASSIVE_OPENMP_WAIT_AT_PREINIT() puts it there. EnsurePassiveOpenMpWait
// then knows libgomp runs passive and does not re-execute (one dynamic link and static initialization of
// every shared library saved: ~1,000 page faults, tens of ms; docs/results/forward.md).
void DefaultPassiveOpenMpWait(int argc, char** argv, char** envp);

}  // namespace reformer

// At namespace scope in one source file of an executable (not a shared library: the loader ignores
// a library's .preinit_array).
#define REFORMER_PASSIVE_OPENMP_WAIT_AT_PREINIT()                                                 \
  __attribute__((section(".preinit_array"), used)) static void (*const reformer_passive_openmp_wait)( \
      int, char**, char**) = &::reformer::DefaultPassiveOpenMpWait
