"""ctest: `reformer-cli forward` reproduces every parity fixture at 1e-4.

Padded-batch mode must match the fixture's top-level expected.safetensors (HF's padded batch) at
valid positions; --per-document mode must match every solo/ row (each document computed alone).
The padded runs pass --timing, which must print one line naming every phase.
Usage: cli_forward_check.py <reformer-cli> <fixtures-dir>
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_np  # noqa: E402

TOL = 1e-4


def main():
    cli, fixtures = sys.argv[1], sys.argv[2]
    names = sorted(d for d in os.listdir(fixtures) if os.path.isfile(os.path.join(fixtures, d, "config.json")))
    assert names, "no fixtures found"
    failures = 0
    checks = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            fdir = os.path.join(fixtures, name)
            inputs = json.load(open(os.path.join(fdir, "inputs.json")))
            ids = np.array(inputs["input_ids"])
            mask = np.array(inputs["attention_mask"]) if inputs.get("attention_mask") is not None else np.ones_like(ids)
            expected = safetensors_np.load(os.path.join(fdir, "expected.safetensors"))
            for mode in ("padded", "per-document"):
                out = os.path.join(tmp, f"{name}.{mode}.safetensors")
                cmd = [cli, "forward", "--model", fdir, "--inputs", os.path.join(fdir, "inputs.json"), "--output", out]
                cmd.append("--per-document" if mode == "per-document" else "--timing")
                r = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if mode == "padded":  # --timing: one line naming every phase
                    line = [x for x in r.stderr.splitlines() if x.startswith("reformer-cli: timing")]
                    checks += 1
                    ok = len(line) == 1 and all(f" {p} " in line[0] for p in
                                                ("inputs", "model", "session", "output-file", "forward", "close"))
                    failures += not ok
                    print(f"{'ok ' if ok else 'BAD'} {name} --timing: {line}")
                got = safetensors_np.load(out)
                assert got["logits"].shape == expected["logits"].shape, (name, mode, got["logits"].shape)
                assert got["hidden_states"].shape == expected["hidden_states"].shape
                if mode == "padded":
                    valid = expected["valid_mask"].astype(bool)
                    for key in ("logits", "hidden_states"):
                        diff = float(np.abs(got[key][valid] - expected[key][valid]).max())
                        checks += 1
                        ok = diff <= TOL
                        failures += not ok
                        print(f"{'ok ' if ok else 'BAD'} {name} padded {key}: max diff {diff:.2e}")
                else:
                    index = json.load(open(os.path.join(fdir, "solo", "index.json"))) if os.path.isdir(
                        os.path.join(fdir, "solo")) else {"rows": []}
                    # Padding positions of the [B, T, ...] file are zero (never written).
                    pad = ~mask.astype(bool)
                    for key in ("logits", "hidden_states"):
                        nonzero = int(np.count_nonzero(got[key][pad]))
                        checks += 1
                        failures += nonzero != 0
                        print(f"{'ok ' if nonzero == 0 else 'BAD'} {name} per-document {key}: {nonzero} non-zero padding values")
                    for row in index["rows"]:
                        solo = safetensors_np.load(os.path.join(fdir, "solo", row["dir"], "expected.safetensors"))
                        real = mask[row["row"]].astype(bool)
                        for key in ("logits", "hidden_states"):
                            diff = float(np.abs(got[key][row["row"]][real] - solo[key][0]).max())
                            checks += 1
                            ok = diff <= TOL
                            failures += not ok
                            print(f"{'ok ' if ok else 'BAD'} {name} solo row {row['row']} {key}: max diff {diff:.2e}")
        # Failing runs leave no output file behind: a row longer than the context (refused before the
        # file is created) and an id out of the vocabulary (refused by the engine after).
        fdir = os.path.join(fixtures, names[0])
        config = json.load(open(os.path.join(fdir, "config.json")))
        for what, row in (("too long", [1] * (config["max_position_embeddings"] + 1)),
                          ("bad id", [1, config["vocab_size"], 2])):
            bad_inputs = os.path.join(tmp, "bad_inputs.json")
            json.dump({"input_ids": [row]}, open(bad_inputs, "w"))
            out = os.path.join(tmp, "bad.safetensors")
            r = subprocess.run([cli, "forward", "--model", fdir, "--inputs", bad_inputs, "--output", out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ok = r.returncode != 0 and not os.path.exists(out) and "reformer-cli:" in r.stderr
            checks += 1
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} {what}: exit {r.returncode}, output file left: {os.path.exists(out)}, "
                  f"{r.stderr.strip()}")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures or checks == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
