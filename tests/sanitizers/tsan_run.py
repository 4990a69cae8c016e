#!/usr/bin/python3
"""Runs one test program under ThreadSanitizer and judges its reports (the TSan build's test runner).

    tsan_run.py [--expect-race FUNCTION] --source-root DIR --binary-root DIR -- PROGRAM [ARGS...]

TSan runs with tests/sanitizers/tsan.supp, exitcode=0 and log_path in a scratch directory (child
processes included); this script then reads every report. gRPC is not built with TSan (Debian's
packages), so TSan cannot see how gRPC hands buffers between its own threads: it reports races
between two accesses that gRPC's code makes to its own memory — the code of its libraries and the
code its headers (grpcpp/) inline into our objects. The rule applied to each data race:

  Each of the two accesses is attributed to the first frame of its stack that is not in the C++
  standard library, Abseil, protobuf (runtime and generated message code) or TSan's interceptors.
  The race COUNTS when at least one access is attributed to a function defined in this repository
  (or to code that is neither gRPC nor this repository, or to an unrestorable stack). It is IGNORED
  only when both accesses are attributed to gRPC, or (the one exception for a lost stack) when one
  access is gRPC's, TSan could not restore the other's stack ("failed to restore the stack": its
  history is bounded), and the memory is a heap block that gRPC allocated (first frame of the
  allocation stack past malloc is gRPC's, e.g. gpr_malloc for a call's arena). That memory holds
  gRPC's call objects (the callback API's operation sets, interceptor state, byte buffers); this
  repository's code reaches it only through gRPC's API, whose accesses are gRPC's own. It is what a
  server-streaming call shows when a generation worker calls StartWrite (gRPC's inline code fills
  the write's operation set on the worker) and a gRPC thread completes the write: the two are
  ordered by gRPC's uninstrumented completion queue (server/grpc/generate_reactor.cc; measured in
  docs/results/fuzz.md, "TSan and the Generate RPC"). A lost stack on any other memory counts.

Every report that is not a data race (lock-order inversion, destroyed locked mutex, thread leak,
signal-unsafe call, ...) counts. Counted reports are printed in full; ignored ones as one line each.

Exit status: 1 if the program failed or any report counts; else 0.
--expect-race FUNCTION inverts the check for the race canaries (race_canary_test.cc): the run must
contain a counted data race with FUNCTION in one of its access stacks, and nothing else that counts.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FRAME = re.compile(r"^\s+#\d+ (?P<func>.*?) (?P<file>\S+) \((?P<module>[^+()]*)\+0x[0-9a-f]+\)$")
ACCESS = re.compile(r"^  (Previous )?(Atomic )?(atomic )?(read|write|Read|Write)\b")


def library_frame(func, file, module):
    """Frames skipped when attributing an access: std, Abseil, protobuf, TSan itself."""
    if "libtsan" in module or "sanitizer_common" in file or "/libsanitizer/" in file:
        return True
    if func.startswith(("std::", "__gnu_cxx::", "operator new", "operator delete")):
        return True
    if "/c++/" in file or "libstdc++" in module:
        return True
    if func.startswith("absl::") or "/absl/" in file or module.startswith("libabsl_"):
        return True
    if func.startswith("google::protobuf::") or "/google/protobuf/" in file or module.startswith("libprotobuf"):
        return True
    if file.endswith((".pb.cc", ".pb.h")) or ".pb.cc:" in file or ".pb.h:" in file:
        return True  # generated message code: attributed to whoever called it
    return False


def is_grpc(func, file, module):
    return (func.startswith(("grpc::", "grpc_", "grpc_core::", "gpr_")) or "/grpcpp/" in file
            or "/include/grpc/" in file or module.startswith(("libgrpc", "libgpr", "libupb", "libaddress_sorting")))


def attribute(frames, roots):
    """'ours', 'grpc', 'other' or 'unknown' for one access's stack."""
    for func, file, module in frames:
        if library_frame(func, file, module):
            continue
        path = file.split(":")[0]
        if any(path.startswith(r + "/") for r in roots):
            return "ours"
        if is_grpc(func, file, module):
            return "grpc"
        return "other"
    return "unknown"


LOCATION = re.compile(r"^  Location is heap block of size \d+ at 0x[0-9a-f]+ allocated by ")


def allocation_stack(report):
    """The frames of the report's 'Location is heap block ... allocated by' block, or []."""
    frames, inside = [], False
    for line in report[1:]:
        if LOCATION.match(line):
            inside = True
        elif inside and line.startswith("    "):
            m = FRAME.match(line)
            if m:
                frames.append((m.group("func"), m.group("file"), m.group("module")))
        elif inside:
            break
    return frames


def grpc_memory_lost_stack(report, stacks, owners):
    """gRPC's access against a lost stack on a heap block gRPC allocated (the module doc's exception)."""
    lost = [("?", "?", "?")]
    if len(stacks) != 2 or lost not in stacks or stacks[0] == stacks[1]:
        return False
    if owners[1 - stacks.index(lost)] != "grpc":
        return False
    return attribute(allocation_stack(report), []) == "grpc"


def split_reports(text):
    reports, current = [], None
    for line in text.splitlines():
        if line.startswith("WARNING: ThreadSanitizer:"):
            current = [line]
            reports.append(current)
        elif current is not None:
            current.append(line)
            if line.startswith("SUMMARY: ThreadSanitizer:"):
                current = None
    return reports


def access_stacks(report):
    """The frame lists of the report's memory accesses (current and previous)."""
    stacks, frames = [], None
    for line in report[1:]:
        if ACCESS.match(line):
            frames = []
            stacks.append(frames)
            if "failed to restore the stack" in line:
                frames.append(("?", "?", "?"))
        elif line.startswith("  ") and not line.startswith("    "):
            frames = None  # Mutex / Location / Thread blocks are not accesses
        elif frames is not None:
            m = FRAME.match(line)
            if m:
                frames.append((m.group("func"), m.group("file"), m.group("module")))
            elif "failed to restore the stack" in line:
                frames.append(("?", "?", "?"))
    return stacks


def judge(report, roots):
    kind = report[0].split("ThreadSanitizer:", 1)[1].split("(pid")[0].strip()
    if not kind.startswith("data race"):
        return True, kind, []
    stacks = access_stacks(report)
    owners = [attribute(s, roots) for s in stacks]
    counted = not stacks or any(o != "grpc" for o in owners)
    if counted and grpc_memory_lost_stack(report, stacks, owners):
        counted = False
    return counted, kind, owners


def one_line(report):
    tops = []
    for stack in access_stacks(report):
        named = [f for f, _, _ in stack if f not in ("<null>", "?") and not f.startswith(("std::", "operator "))]
        tops.append(named[0][:100] if named else "?")
    return " <-> ".join(tops)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect-race")
    ap.add_argument("--source-root", required=True)
    ap.add_argument("--binary-root", required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    roots = [os.path.realpath(args.source_root), os.path.realpath(args.binary_root),
             os.path.abspath(args.source_root), os.path.abspath(args.binary_root)]
    with tempfile.TemporaryDirectory(prefix="tsan-") as tmp:
        env = dict(os.environ)
        options = ["suppressions=" + os.path.join(HERE, "tsan.supp"), "log_path=" + os.path.join(tmp, "report"),
                   "exitcode=0", "history_size=4", "second_deadlock_stack=1", "halt_on_error=0"]
        env["TSAN_OPTIONS"] = ":".join(options + ([env["TSAN_OPTIONS"]] if env.get("TSAN_OPTIONS") else []))
        status = subprocess.run(command, env=env).returncode
        text = ""
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), errors="replace") as f:
                text += f.read()
    counted, ignored, canary = [], [], []
    for report in split_reports(text):
        keep, kind, owners = judge(report, roots)
        if not keep:
            ignored.append(report)
        elif args.expect_race and kind.startswith("data race") and any(
                args.expect_race in f for s in access_stacks(report) for f, _, _ in s):
            canary.append(report)
        else:
            counted.append(report)
    for report in counted:
        print("\n".join(report), file=sys.stderr)
    if ignored:
        print(f"tsan_run: {len(ignored)} report(s) between two accesses by gRPC's own code (or gRPC's code and a "
              "lost stack on gRPC's memory) ignored:", file=sys.stderr)
        for report in ignored:
            print("  " + one_line(report), file=sys.stderr)
    failed = status != 0 or counted
    if args.expect_race:
        print(f"tsan_run: expected race on {args.expect_race}: {len(canary)} report(s)", file=sys.stderr)
        if canary:
            print("\n".join(canary[0]), file=sys.stderr)
        failed = failed or not canary
    print(f"tsan_run: {os.path.basename(command[0])} exit {status}, {len(counted)} counted report(s), "
          f"{len(ignored)} ignored, {len(canary)} expected", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
