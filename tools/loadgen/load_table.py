#!/usr/bin/python3
"""Measures the README serving table end to end on this machine (loopback only), per compute type:

  1. a random-weight model of the crime-and-punishment shape (make_random_model.py) unless --model_dir;
  2. for each --compute_types entry: reformer-server --compute_type T (ephemeral ports, default workers and
     threads for the CPU quota), then loadgen with 16 clients: 512-token documents, mixed 512-16,384, and
     512-token documents while one 65,536-token document is kept in flight (16 and 4 clients);
  3. right after each of the first two served runs, back to back, the offline engine (offline_throughput,
     same compute type, a 2-thread session, the same document lengths one at a time). Ratios of the served
     figure to this same-run offline figure are what the table leads with: wall clock (tokens/s) and per
     CPU-second (server process CPU time from /proc vs the offline process's), because on a shared machine
     wall-clock rates move with what other processes do while CPU-normalised rates move much less;
  4. prints one markdown table (ratios first, absolute figures beside them) and the CPU it ran on; --json.

  /usr/bin/python3 tools/loadgen/load_table.py --build build
      [--compute_types float32,bfloat16,int8] [--requests 200] [--mixed_requests 48] [--background_s 30]

About 3 minutes per compute type on a quiet 2-vCPU machine (docs/results/load.md). A compute type the CPU
cannot run is reported as skipped (the server's own error) and the others still run.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_summary():
    """Model name and the AVX-512 / VNNI / AMX flags of this CPU (what the compute types depend on)."""
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
              "amx_bf16", "amx_int8"]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(f for f in wanted if f in flags)}"


def run_loadgen(port, extra, out_json, lengths_file):
    cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "--target", f"127.0.0.1:{port}", "--model", "m",
           "--json", out_json, "--dump-lengths", lengths_file, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(r.stdout, r.stderr, file=sys.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed: {' '.join(cmd)}")
    with open(out_json) as f:
        return json.load(f)


def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def offline(build, model_dir, lengths_file, compute_type):
    """The engine alone on the same document lengths, one at a time, 2-thread session, same compute type."""
    exe = os.path.join(build, "bin", "offline_throughput")
    # OMP_WAIT_POLICY=passive, as reformer-server sets for itself: with spinning barriers a 2-thread
    # session collapses (10-15x slower) whenever other processes compete for the two cores.
    r = subprocess.run([exe, "--model_dir", model_dir, "--lengths_file", lengths_file, "--threads", "2",
                        "--compute_type", compute_type], capture_output=True, text=True, check=True,
                       env=dict(os.environ, OMP_WAIT_POLICY="passive"))
    m = re.search(r"offline best: [\d.]+ docs/s, (\d+) tokens/s, (\d+) tokens/cpu_s", r.stdout)
    return {"tokens_per_s": float(m.group(1)), "tokens_per_cpu_s": float(m.group(2))}


class Server:
    """reformer-server on ephemeral loopback ports; `port` is None when it failed to start."""

    def __init__(self, build, model_dir, compute_type, log_path, flags=()):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(build, "bin", "reformer-server"), "--model_dir", model_dir, "--model_name", "m",
             "--bind_address", "127.0.0.1", "--grpc_port", "0", "--http_port", "0",
             "--compute_type", compute_type, *flags], stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = None
        for line in self.proc.stdout:
            m = re.search(r"grpc_port=(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        # Ready once the warm-up forward is done (main.cc logs READY).
        deadline = time.monotonic() + 300
        while self.port is not None and time.monotonic() < deadline and self.proc.poll() is None:
            with open(log_path) as f:
                if "READY" in f.read():
                    return
            time.sleep(0.2)
        self.port = None

    def error(self):
        with open(self.log_path) as f:
            lines = [l.strip() for l in f if l.strip()]
        return lines[-1] if lines else f"exit {self.proc.poll()}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def cases(args):
    """(name, loadgen arguments, compare with offline)."""
    long_args = ["--lengths", "512", "--requests", "100000", "--background-long", "65536",
                 "--duration", str(args.background_s), "--long-head-start", "1"]
    all_cases = [
        ("512 tokens", ["--concurrency", "16", "--lengths", "512", "--requests", str(args.requests),
                        "--duration", "120"], True),
        ("mixed 512-16,384", ["--concurrency", "16", "--lengths", "512-16384",
                              "--requests", str(args.mixed_requests), "--duration", "180"], True),
        ("512 tokens beside a 65,536-token document", ["--concurrency", "16", *long_args], False),
        ("same, 4 clients", ["--concurrency", "4", *long_args], False),
    ]
    keys = ["512", "mixed", "background", "background4"]
    wanted = args.cases.split(",")
    return [c for k, c in zip(keys, all_cases) if k in wanted]


def measure_type(args, model_dir, tmp, compute_type):
    server = Server(args.build, model_dir, compute_type, os.path.join(tmp, f"server-{compute_type}.log"),
                    args.server_flags.split())
    if server.port is None:
        reason = server.error()
        server.stop()
        print(f"{compute_type}: skipped ({reason})", file=sys.stderr)
        return {"compute_type": compute_type, "skipped": reason, "rows": []}
    rows = []
    try:
        for i, (name, extra, compare) in enumerate(cases(args)):
            lengths = os.path.join(tmp, f"lengths-{compute_type}-{i}.txt")
            load_before = loadavg()
            cpu0 = proc_cpu_seconds(server.proc.pid)
            served = run_loadgen(server.port, extra, os.path.join(tmp, f"r-{compute_type}-{i}.json"), lengths)
            served["server_cpu_s"] = proc_cpu_seconds(server.proc.pid) - cpu0
            served["tokens_per_cpu_s"] = served["tokens_ok"] / max(1e-9, served["server_cpu_s"])
            base = offline(args.build, model_dir, lengths, compute_type) if compare else None
            rows.append({"workload": name, "served": served, "offline": base, "loadavg": [load_before, loadavg()]})
    finally:
        server.stop()
    return {"compute_type": compute_type, "rows": rows}


def print_table(results):
    print("| compute type | workload | served/offline (wall) | served/offline (per CPU-s) | served tokens/s | "
          "offline tokens/s | req/s | p50 ms | p90 ms | p99 ms | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        if res.get("skipped"):
            print(f"| {res['compute_type']} | skipped: {res['skipped']} |" + " |" * 9)
            continue
        for r in res["rows"]:
            s, lat, off = r["served"], r["served"]["latency"], r["offline"]
            ratios = ["-", "-"]
            if off:
                ratios = [f"**{100 * s['tokens_per_s'] / off['tokens_per_s']:.0f} %**",
                          f"{100 * s['tokens_per_cpu_s'] / off['tokens_per_cpu_s']:.0f} %"]
            cells = [res["compute_type"], r["workload"], *ratios, f"{s['tokens_per_s']:,.0f}",
                     f"{off['tokens_per_s']:,.0f}" if off else "-", f"{s['requests_per_s']:.2f}",
                     f"{lat['p50_ms']:,.0f}", f"{lat['p90_ms']:,.0f}", f"{lat['p99_ms']:,.0f}",
                     f"{r['loadavg'][0]:.1f}-{r['loadavg'][1]:.1f}"]
            print("| " + " | ".join(cells) + " |")
    for res in results:
        for r in res["rows"]:
            if "background_long" in r["served"]:
                b = r["served"]["background_long"]
                d = b["short_during_long"]
                lat = b["long_latency_s"]
                span = f"{min(lat):.1f}-{max(lat):.1f} s" if lat else "-"
                print(f"{res['compute_type']}, {r['workload']}: 64K documents {b['long_ok']}/{b['long_requests']} "
                      f"ok in {span}; {d['count']} short requests ran entirely during one: "
                      f"p50 {d['p50_ms'] or 0:.0f} ms, p99 {d['p99_ms'] or 0:.0f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model_dir", default="")
    ap.add_argument("--compute_types", default="float32,bfloat16,int8")
    ap.add_argument("--requests", type=int, default=200, help="512-token requests")
    ap.add_argument("--mixed_requests", type=int, default=48, help="mixed 512-16,384-token requests")
    ap.add_argument("--background_s", type=float, default=30, help="seconds of each 64K-document case")
    ap.add_argument("--cases", default="512,mixed,background,background4",
                    help="workloads to run (a subset of the default)")
    ap.add_argument("--server_flags", default="", help="extra reformer-server flags, for A/B runs")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="load-table-")
    model_dir = args.model_dir
    if not model_dir:
        model_dir = os.path.join(tmp, "cp-random")
        subprocess.run([sys.executable, os.path.join(HERE, "make_random_model.py"), "--out", model_dir], check=True)
    results = [measure_type(args, model_dir, tmp, t) for t in args.compute_types.split(",") if t]
    print(f"CPU: {cpu_summary()}")
    print_table(results)
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_summary(), "results": results}, f, indent=2)
    return 0 if any(res["rows"] for res in results) else 1


if __name__ == "__main__":
    sys.exit(main())
