#!/usr/bin/env python3
"""The two benchmark programs still run and report sane figures (docs/results/engine-perf2.md,
docs/generation.md "Speed"): a benchmark is not a timed test, but one that no longer runs, or whose
figures are nonsense, is a defect nobody would notice until the next measurement.

usage: bench_smoke_test.py BIN_DIR SOURCE_ROOT
"""
import json
import math
import os
import re
import subprocess
import sys

BIN, SOURCE = sys.argv[1], sys.argv[2]


def run(args):
    p = subprocess.run(args, cwd=SOURCE, capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(args)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return p.stdout


def check_reformer_bench():
    out = run([os.path.join(BIN, "reformer_bench"), "--case", "cp", "--tokens", "1024", "--rounds", "1", "--json",
               "--compute_type", "float32,auto"])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["compute_type"] for r in rows][0] == "float32" and len(rows) == 2, out
    for r in rows:
        assert r["tokens"] == 1024 and r["median_s"] > 0 and r["tokens_per_s"] > 0, r
        assert 0 < r["ratio_of_medians"] < 5 and r["matmul_gflops_median"] > 0, r
        assert math.isfinite(r["mean_logprob"]) and -math.log(320) - 3 < r["mean_logprob"] < 0, r
    # The same random model and tokens for every type: the mean log-prob agrees to quantisation error.
    assert abs(rows[0]["mean_logprob"] - rows[1]["mean_logprob"]) < 0.05, rows
    assert rows[0]["speedup_median"] == 1.0, rows[0]
    print("reformer_bench: ok", [(r["compute_type"], r["median_s"], r["ratio_of_medians"]) for r in rows])


def check_generate_bench():
    out = run([os.path.join(BIN, "reformer_generate_bench"), "--case", "default", "--contexts", "256", "--steps",
               "4", "--streams", "1,2", "--stream-context", "128", "--rounds", "1"])
    m = re.search(r"median, context +256: score ([0-9.]+) s, ttft ([0-9.]+) s.*step ([0-9.]+) ms", out)
    assert m and all(float(x) > 0 for x in m.groups()), out
    for n in (1, 2):
        s = re.search(rf"streams +{n} x 128 tokens: ([0-9.]+) tokens/s", out)
        assert s and float(s.group(1)) > 0, out
    assert re.search(r"FLOPs per token \(cached step, full windows\): [0-9.]+ M", out), out
    print("reformer_generate_bench: ok")


check_reformer_bench()
check_generate_bench()
