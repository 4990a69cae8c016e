"""The server process seen from outside: start it (or attach to one), sample /proc once a second,
send SIGTERM and time the exit."""

import os
import re
import signal
import subprocess
import threading
import time


def malloc_stats(pid, log_path=""):
    """Diagnosis (--malloc_stats): glibc's malloc_stats() of the server, called through gdb, so that
    the bytes malloc has in use can be told from the bytes its arenas hold (a leak grows the first;
    fragmentation only the second). glibc prints to the server's stderr (its log); the numbers are
    read back from there: {"system": bytes, "in_use": bytes, "arenas": n} or {} when gdb failed."""
    before = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else 0
    try:
        subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (void)malloc_stats()"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if not log_path:
        return {}
    time.sleep(0.2)
    with open(log_path, "rb") as f:
        f.seek(before)
        text = f.read().decode(errors="replace")
    out = parse_malloc_stats(text)
    out.update(memory_kinds(pid))
    return out


def memory_kinds(pid):
    """RSS by kind from /proc/PID/smaps_rollup, bytes: anonymous, of it in huge pages, file-backed."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            rows = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}
    kb = lambda k: int(rows.get(k, "0 kB").split()[0]) * 1024
    return {"anon": kb("Anonymous"), "anon_huge": kb("AnonHugePages"),
            "file": kb("Shared_Clean") + kb("Private_Clean")}


def parse_malloc_stats(text):
    """The totals of one malloc_stats() printout (see malloc_stats)."""
    total = text.rfind("Total (incl. mmap):")
    if total < 0:
        return {}
    nums = [int(n) for n in re.findall(r"=\s*(\d+)", text[total:])[:4]]
    if len(nums) < 4:
        return {}
    return {"system": nums[0], "in_use": nums[1], "mmap_regions_max": nums[2], "mmap_bytes_max": nums[3],
            "arenas": len(re.findall(r"^Arena \d+:", text[:total], re.M))}


class ServerProcess:
    """A reformer-server the soak started (port 0, loopback) or one given by pid and ports."""

    def __init__(self, proc=None, pid=None, grpc_port=0, http_port=0, host="127.0.0.1"):
        self.proc, self.pid = proc, pid if pid is not None else proc.pid
        self.grpc_port, self.http_port, self.host = grpc_port, http_port, host
        self.stderr_tail = []

    @staticmethod
    def spawn(binary, model_dir, extra_args, log_path):
        args = [binary, "--model_dir", model_dir, "--grpc_port", "0", "--http_port", "0",
                "--bind_address", "127.0.0.1"] + list(extra_args)
        log = open(log_path, "w") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        line = proc.stdout.readline()
        if "grpc_port=" not in line:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"server did not start (see {log_path}): {line!r}")
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        server = ServerProcess(proc, grpc_port=int(fields["grpc_port"]), http_port=int(fields["http_port"]))
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain stdout
        server.command = args
        return server

    @property
    def exit_code_known(self):
        return self.proc is not None

    @property
    def grpc_target(self):
        return f"{self.host}:{self.grpc_port}"

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has exited
        except (OSError, IndexError):
            return False

    def sigterm(self):
        os.kill(self.pid, signal.SIGTERM)

    def wait_exit(self, timeout):
        """Exit code (None if it did not exit within `timeout`). An attached process is not the soak's
        child, so its exit code is unknown: 0 when it is gone (see `exit_code_known`)."""
        end = time.monotonic() + timeout
        while True:
            if self.proc is not None:
                rc = self.proc.poll()
                if rc is not None:
                    return rc
            elif not self.alive():
                return 0
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sample(pid):
    """{rss, hwm, threads, fds, cpu_s} of a live process, or None when it is gone."""
    try:
        status = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                status[k] = v.split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return {"rss": int(status["VmRSS"][0]) * 1024, "hwm": int(status["VmHWM"][0]) * 1024,
                "threads": int(status["Threads"][0]), "fds": fds,
                "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}
    except (OSError, KeyError, IndexError, ValueError):
        return None


def thread_names(pid):
    """thread name -> count (which pool grew, when the thread count does not come back)."""
    out = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            out[name] = out.get(name, 0) + 1
    except OSError:
        pass
    return out


def fd_kinds(pid):
    """fd target kind -> count (socket, pipe, anon_inode:..., file)."""
    out = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            kind = t.split(":", 1)[0] if ":" in t and not t.startswith("/") else "file"
            if t.startswith("anon_inode"):
                kind = t
            out[kind] = out.get(kind, 0) + 1
    except OSError:
        pass
    return out


class Sampler:
    """Samples the process once a second (in a thread, so a busy event loop does not skew it)."""

    def __init__(self, pid, period=1.0):
        self.pid, self.period = pid, period
        self.samples = []   # (monotonic time, phase, sample)
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            s = sample(self.pid)
            if s is None:
                return
            self.samples.append((time.monotonic(), self.phase, s))
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)

    def of(self, phase):
        return [s for _, p, s in self.samples if p == phase]
