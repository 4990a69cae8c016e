#!/usr/bin/python3
"""Benchmark (not a test) of `reformer-cli forward` end to end: whole-process wall clock and peak RSS
(/usr/bin/time -v) on the google/reformer-crime-and-punishment shape with random weights, next to
oneDNN's f32 matmul rate measured right before and right after each run (`reformer_bench --probe`).

  /usr/bin/python3 tools/bench/forward_bench.py --tokens 65536 --rounds 3
  /usr/bin/python3 tools/bench/forward_bench.py --tokens 524288 --rounds 1
  (--timing adds each run's phases: start-up, inputs, model, session, output-file, prefault, forward, close)

Figures per run: wall seconds; model GFLOP/s = tokens x 5.32 MFLOP (this shape's FLOP/token,
docs/engine-numerics.md §12.1) / wall; ratio = model GFLOP/s / mean(probe before, probe after); peak RSS
against 2.5 GiB + the output file's size. The model directory (config.json + model.safetensors, vocab
320 as the published checkpoint, rotations drawn from hash_seed) and the inputs file are written to
--workdir first; the output file is deleted after each run. Needs numpy.
"""

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOP_PER_TOKEN = 5.32e6
GIB = 1 << 30


def make_model(path, seed):
    spec = importlib.util.spec_from_file_location("make_random_model",
                                                  os.path.join(ROOT, "tools", "loadgen", "make_random_model.py"))
    mrm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mrm)
    config = dict(mrm.SHAPES["crime-and-punishment"], vocab_size=320)  # the published vocabulary size
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    mrm.write_safetensors(os.path.join(path, "model.safetensors"), mrm.make(config, seed))
    return config


def write_inputs(path, tokens, vocab, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write('{"input_ids": [[')
        f.write(",".join(str(rng.randrange(2, vocab)) for _ in range(tokens)))
        f.write("]]}")


def probe(bench, threads):
    out = subprocess.run([bench, "--probe", "--rounds", "2", "--threads", str(threads)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["matmul_gflops_median"]


def timed_forward(cli, model, inputs, output, threads, per_document, timing):
    cmd = ["/usr/bin/time", "-v", cli, "forward", "--model", model, "--inputs", inputs, "--output", output,
           "--threads", str(threads)]
    if per_document:
        cmd.append("--per-document")
    if timing:
        cmd.append("--timing")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"reformer-cli forward failed ({r.returncode}):\n{r.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    phases = [x for x in r.stderr.splitlines() if x.startswith("reformer-cli: timing")]
    return seconds, rss_kib * 1024, phases[0] if phases else None


def cpu_description():
    model, flags = "?", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    simd = [x for x in flags if x.startswith(("avx", "fma", "amx"))]
    return model, " ".join(simd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--per-document", action="store_true",
                   help="run `forward --per-document` (default: the padded-batch mode, as `forward` without flags)")
    p.add_argument("--cli", default=os.path.join(ROOT, "build", "bin", "reformer-cli"))
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bin", "reformer_bench"))
    p.add_argument("--workdir", default=None, help="default: a temporary directory, removed at the end")
    p.add_argument("--json", action="store_true", help="one JSON line per run and a summary line")
    p.add_argument("--timing", action="store_true",
                   help="pass `forward --timing` and show where each run's wall clock went (phases)")
    args = p.parse_args()

    work = args.workdir or tempfile.mkdtemp(prefix="forward_bench_")
    try:
        model = os.path.join(work, "cp-random-320")
        config = make_model(model, seed=0)
        inputs = os.path.join(work, f"inputs-{args.tokens}.json")
        write_inputs(inputs, args.tokens, config["vocab_size"], seed=1)
        output = os.path.join(work, "out.safetensors")
        cpu, simd = cpu_description()
        load = os.getloadavg()[0]
        if not args.json:
            print(f"cpu: {cpu}; SIMD flags: {simd}; load average {load:.2f}; {args.tokens} tokens, "
                  f"{args.threads} threads, {'per-document' if args.per_document else 'padded'} mode")
        runs = []
        for r in range(args.rounds):
            before = probe(args.bench, args.threads)
            wall, rss, phases = timed_forward(args.cli, model, inputs, output, args.threads, args.per_document,
                                              args.timing)
            out_bytes = os.path.getsize(output)
            os.remove(output)
            after = probe(args.bench, args.threads)
            mm = 0.5 * (before + after)
            gflops = args.tokens * FLOP_PER_TOKEN / wall / 1e9
            run = {"round": r, "tokens": args.tokens, "wall_s": round(wall, 3), "model_gflops": round(gflops, 2),
                   "matmul_gflops": round(mm, 2), "matmul_before": round(before, 2), "matmul_after": round(after, 2),
                   "ratio": round(gflops / mm, 3), "peak_rss_gib": round(rss / GIB, 3),
                   "output_gib": round(out_bytes / GIB, 3),
                   "rss_bound_gib": round(2.5 + out_bytes / GIB, 3)}
            if phases:
                run["phases"] = phases.split(": ", 1)[1]
            runs.append(run)
            if args.json:
                print(json.dumps(run))
            else:
                print(f"round {r}: wall {wall:.2f} s, {gflops:.1f} GFLOP/s, matmul {mm:.1f} GFLOP/s (before "
                      f"{before:.1f}, after {after:.1f}), ratio {gflops / mm:.3f}; peak RSS {rss / GIB:.2f} GiB "
                      f"(bound 2.5 + {out_bytes / GIB:.2f} output = {2.5 + out_bytes / GIB:.2f} GiB)")
                if phases:
                    print(f"  {phases}")
        ratios = sorted(x["ratio"] for x in runs)
        summary = {"tokens": args.tokens, "rounds": args.rounds, "ratio_median": ratios[len(ratios) // 2],
                   "ratio_min": ratios[0], "ratio_max": ratios[-1],
                   "peak_rss_gib_max": max(x["peak_rss_gib"] for x in runs), "rss_bound_gib": runs[0]["rss_bound_gib"],
                   "load_average_start": round(load, 2), "cpu": cpu, "simd_flags": simd}
        print(json.dumps(summary) if args.json else
              f"median ratio {summary['ratio_median']:.3f} (min {ratios[0]:.3f}, max {ratios[-1]:.3f}); "
              f"max peak RSS {summary['peak_rss_gib_max']:.2f} GiB (bound {summary['rss_bound_gib']:.2f} GiB)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
