"""ctest: `reformer-cli generate` reproduces Hugging Face's greedy generations (tests/fixtures/generation/)
in both decode modes, batches prompts without changing a row, streams the same text it reports in
--json, and refuses bad flags.

Usage: cli_generate_check.py <reformer-cli> <fixtures-dir> <default-model-dir>
"""
import json
import os
import subprocess
import sys
import tempfile


def run(cmd, expect_rc=0):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != expect_rc:
        raise AssertionError(f"{cmd}: exit {p.returncode}, expected {expect_rc}\n{p.stderr.decode()[-2000:]}")
    return p.stdout.decode("utf-8")


def main():
    cli, fixtures, default_model = sys.argv[1], sys.argv[2], sys.argv[3]
    gen = os.path.join(fixtures, "generation")
    names = sorted(d for d in os.listdir(gen) if os.path.isfile(os.path.join(gen, d, "expected.json")))
    assert len(names) >= 3, names
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            fdir = os.path.join(gen, name)
            expected = json.load(open(os.path.join(fdir, "expected.json")))
            prompt = json.load(open(os.path.join(fdir, "inputs.json")))["input_ids"][0]
            # Row 0: the fixture's prompt; rows 1-2 other prompts beside it (it must not change).
            rows = [prompt, prompt[: len(prompt) // 2], prompt[::-1]]
            inputs = os.path.join(tmp, f"{name}.json")
            json.dump({"input_ids": rows}, open(inputs, "w"))
            for mode, path in (("cached", "greedy_cached"), ("recompute", "greedy_no_cache")):
                want = expected[path]["new_tokens"][0]
                reason = "eos" if expected[path]["stopped_by_eos"] else "length"
                out = run([cli, "generate", "--model", fdir, "--inputs", inputs, "--max_new_tokens",
                           str(expected["max_new_tokens"]), "--mode", mode, "--json", "--threads", "2"])
                lines = [json.loads(line) for line in out.splitlines() if line.strip()]
                ok = (len(lines) == 3 and [l["index"] for l in lines] == [0, 1, 2] and
                      lines[0]["new_tokens"] == want and lines[0]["finish_reason"] == reason)
                failures += not ok
                print(f"{'ok ' if ok else 'BAD'} {name} {mode}: {len(lines[0]['new_tokens'])} tokens, "
                      f"finish_reason {lines[0]['finish_reason']}")
                if not ok:
                    print("  got ", lines[0]["new_tokens"], "\n  want", want)
        # Text: the streamed output equals the --json text; sampling with a seed repeats itself.
        args = [cli, "generate", "--model", default_model, "--prompt", "And God said", "--max_new_tokens", "64",
                "--temperature", "0.8", "--top_k", "40", "--seed", "7", "--threads", "2"]
        streamed = run(args)
        j1 = json.loads(run(args + ["--json"]))
        j2 = json.loads(run(args + ["--json"]))
        ok = streamed == j1["text"] + "\n" and j1 == j2 and len(j1["new_tokens"]) == 64
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} default model: streamed text == --json text, same seed -> same tokens")
        stop = json.loads(run(args + ["--json", "--stop", j1["text"][10:13]]))
        ok = stop["finish_reason"] == "stop" and j1["text"].startswith(stop["text"]) and \
            j1["text"][10:13] not in stop["text"]
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} default model: stop string ends the text before it")
        # The other compute types generate (their tokens may differ from float32: docs/generation.md §8).
        for ct in ("bfloat16", "int8"):
            j = json.loads(run([cli, "generate", "--model", default_model, "--prompt", "And God said",
                                "--max_new_tokens", "16", "--json", "--threads", "2", "--compute_type", ct]))
            ok = len(j["new_tokens"]) == 16 and j["finish_reason"] == "length"
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} default model: --compute_type {ct} generates 16 tokens")
        for bad in (["--max_new_tokens", "0"], ["--max_new_tokens", "5000"], ["--top_p", "2"], ["--bogus", "1"],
                    ["--mode", "fast"], ["--compute_type", "fp8"]):
            cmd = [cli, "generate", "--model", default_model, "--prompt", "x", "--max_new_tokens", "4"] + bad
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ok = p.returncode == 2 and p.stderr
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} refuses {' '.join(bad)}: {p.stderr.decode().splitlines()[0] if p.stderr else ''}")
    if failures:
        print(f"{failures} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
