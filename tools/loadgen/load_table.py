#!/usr/bin/python3
"""Measures the README load table end to end on this machine (loopback only):

  1. a random-weight model of the crime-and-punishment shape (make_random_model.py) unless --model_dir;
  2. reformer-server on it (ephemeral ports, default workers/threads for the CPU quota);
  3. loadgen with 16 clients: 512-token documents, mixed 512-16384, and 512-token documents while one
     65,536-token document is kept in flight;
  4. the offline engine (offline_throughput) on the same document lengths, right after each served run:
     a 2-thread session (wall-clock tokens/s) and a 1-thread session (tokens per CPU-second); the served
     side is measured both ways too (server process CPU time from /proc), because on a shared machine
     wall-clock rates move with what other processes do while CPU-normalised rates do not;
  5. prints a markdown table (and --json).

  /usr/bin/python3 tools/loadgen/load_table.py --build build [--requests 400] [--mixed_requests 64]
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


def run_loadgen(port, model, extra, out_json, lengths_file):
    cmd = [sys.executable, os.path.join(HERE, "loadgen.py"), "--target", f"127.0.0.1:{port}", "--model", model,
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


def offline(build, model_dir, lengths_file):
    """The engine alone on the same document lengths, one at a time: a 2-thread session (wall-clock
    tokens/s) and a 1-thread session (tokens per CPU-second, which does not depend on how much of the
    shared machine other processes take)."""
    exe = os.path.join(build, "bin", "offline_throughput")

    def run(threads):
        # OMP_WAIT_POLICY=passive: with the default spinning barriers a 2-thread session collapses
        # (10-15x slower) whenever other processes compete for the two cores.
        r = subprocess.run([exe, "--model_dir", model_dir, "--lengths_file", lengths_file, "--threads", str(threads)],
                           capture_output=True, text=True, check=True, env=dict(os.environ, OMP_WAIT_POLICY="passive"))
        m = re.search(r"offline best: [\d.]+ docs/s, (\d+) tokens/s, (\d+) tokens/cpu_s", r.stdout)
        return float(m.group(1)), float(m.group(2))

    wall2, cpu2 = run(2)
    wall1, cpu1 = run(1)
    return {"two_threads_tokens_per_s": wall2, "two_threads_tokens_per_cpu_s": cpu2,
            "one_thread_tokens_per_s": wall1, "one_thread_tokens_per_cpu_s": cpu1}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model_dir", default="")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--mixed_requests", type=int, default=64)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="load-table-")
    model_dir = args.model_dir
    if not model_dir:
        model_dir = os.path.join(tmp, "cp-random")
        subprocess.run([sys.executable, os.path.join(HERE, "make_random_model.py"), "--out", model_dir], check=True)
    server = subprocess.Popen([os.path.join(args.build, "bin", "reformer-server"), "--model_dir", model_dir,
                               "--model_name", "m", "--bind_address", "127.0.0.1", "--grpc_port", "0",
                               "--http_port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = None
    for line in server.stdout:
        m = re.search(r"grpc_port=(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        raise SystemExit("reformer-server did not start")
    time.sleep(1)
    rows = []
    try:
        cases = [
            ("512 tokens", ["--concurrency", "16", "--lengths", "512", "--requests", str(args.requests)]),
            ("mixed 512-16384", ["--concurrency", "16", "--lengths", "512-16384",
                                 "--requests", str(args.mixed_requests)]),
            ("512 tokens + one 65,536-token document in flight",
             ["--concurrency", "16", "--lengths", "512", "--requests", "100000", "--background-long", "65536"]),
            ("512 tokens + one 65,536-token document in flight, 4 clients",
             ["--concurrency", "4", "--lengths", "512", "--requests", "100000", "--background-long", "65536"]),
        ]
        for name, extra in cases:
            lengths = os.path.join(tmp, f"lengths{len(rows)}.txt")
            load_before = loadavg()
            cpu0 = proc_cpu_seconds(server.pid)
            served = run_loadgen(port, "m", [*extra, "--duration", str(args.duration if len(rows) < 2 else 60)],
                                 os.path.join(tmp, f"r{len(rows)}.json"), lengths)
            served["server_cpu_s"] = proc_cpu_seconds(server.pid) - cpu0
            served["tokens_per_cpu_s"] = served["tokens_ok"] / max(1e-9, served["server_cpu_s"])
            base = offline(args.build, model_dir, lengths) if len(rows) < 2 else None
            rows.append({"workload": name, "served": served, "offline": base,
                         "loadavg": [load_before, loadavg()]})
    finally:
        server.terminate()
        server.wait(timeout=120)

    print("| workload | clients | req/s | tokens/s | p50 ms | p90 ms | p99 ms | served tokens/CPU-s | "
          "offline tokens/CPU-s | served/offline (CPU) | offline 2-thread tokens/s | served/offline (wall) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, lat, off = r["served"], r["served"]["latency"], r["offline"]
        cells = [r["workload"], s["concurrency"], f"{s['requests_per_s']:.2f}", f"{s['tokens_per_s']:.0f}",
                 f"{lat['p50_ms']:.0f}", f"{lat['p90_ms']:.0f}", f"{lat['p99_ms']:.0f}"]
        if off:
            cells += [f"{s['tokens_per_cpu_s']:.0f}", f"{off['one_thread_tokens_per_cpu_s']:.0f}",
                      f"{100 * s['tokens_per_cpu_s'] / off['one_thread_tokens_per_cpu_s']:.0f} %",
                      f"{off['two_threads_tokens_per_s']:.0f}",
                      f"{100 * s['tokens_per_s'] / off['two_threads_tokens_per_s']:.0f} %"]
        else:
            cells += ["-"] * 5
        print("| " + " | ".join(str(c) for c in cells) + " |")
    for r in rows:
        print(f"{r['workload']}: load average {r['loadavg'][0]:.1f} -> {r['loadavg'][1]:.1f}")
        if "background_long" in r["served"]:
            b = r["served"]["background_long"]
            d = b["short_during_long"]
            print(f"  64K document: {b['long_ok']}/{b['long_requests']} ok in {b['long_latency_s']} s; "
                  f"{d['count']} short requests ran entirely during it: p50 {d['p50_ms']:.0f} ms, "
                  f"p99 {d['p99_ms']:.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
