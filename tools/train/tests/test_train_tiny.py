"""Trains the tiny preset of tools/train/train.py on the KJV corpus.

determinism: two runs of 50 steps give identical loss logs, the loss falls, and the exported
  model.safetensors/rotations.safetensors reproduce the logged held-out figure when reloaded.
resume: a run stopped at step 20 and resumed logs exactly what an uninterrupted run logs.
Run as: test_train_tiny.py determinism|resume (exit 77 = skipped: torch or `bible` absent).
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_DIR = os.path.dirname(HERE)
SKIP = 77


def log_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            rows.append(tuple(line.rstrip("\n").split("\t")[:4]))  # kind, step, value, lr (not wall time)
    return rows


def train(out, *extra):
    cmd = [sys.executable, os.path.join(TRAIN_DIR, "train.py"), "--preset", "tiny", "--out", out,
           "--state", os.path.join(out, "state.pt"), "--threads", "1"] + list(extra)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(r.stdout)
        raise SystemExit("train.py failed: %s" % " ".join(cmd))
    return log_rows(os.path.join(out, "train_log.tsv"))


def check(cond, msg):
    if not cond:
        print("FAIL: " + msg)
        raise SystemExit(1)
    print("ok: " + msg)


def determinism(tmp):
    import torch

    sys.path.insert(0, TRAIN_DIR)
    import corpus
    import evaluate
    import train as T

    a = train(os.path.join(tmp, "a"), "--steps", "50")
    b = train(os.path.join(tmp, "b"), "--steps", "50")
    check(len([r for r in a if r[0] == "train"]) == 50, "50 training steps logged")
    check(a == b, "two runs of 50 steps give identical loss logs")
    losses = [float(r[2]) for r in a if r[0] == "train"]
    first, last = losses[0], sum(losses[-10:]) / 10
    check(first > 7.5, "initial loss near uniform (8 bits/byte): %.3f" % first)
    check(last < first - 2.5, "loss falls: first %.3f, mean of last 10 %.3f" % (first, last))
    held = [float(r[2]) for r in a if r[0] == "heldout"]
    check(len(held) == 1, "held-out evaluation logged at the last step")
    # the exported files reproduce the held-out figure computed in training
    torch.set_num_threads(1)
    model = evaluate.load_model(os.path.join(tmp, "a"))
    _, held_text, _ = corpus.split(corpus.dump_kjv())
    preset = T.PRESETS["tiny"]
    docs = corpus.heldout_documents(held_text, preset["seq_len"])[:preset["eval_docs"]]
    again = T.evaluate_docs(model, docs)
    check(abs(again - held[0]) < 1e-5, "reloaded export scores %.6f, training logged %.6f" % (again, held[0]))
    via_eval = evaluate.score_documents(model, docs)["bits_per_byte"]
    check(abs(via_eval - held[0]) < 1e-4, "evaluate.py scores %.6f" % via_eval)


def resume(tmp):
    ref = train(os.path.join(tmp, "ref"), "--steps", "50", "--stop-after", "35")
    out = os.path.join(tmp, "res")
    part = train(out, "--steps", "50", "--stop-after", "20")
    tr = lambda rows: [r for r in rows if r[0] == "train"]  # noqa: E731
    check(tr(part) == tr(ref)[:20], "first 20 steps equal")
    # pretend the run was killed after step 20's checkpoint but with later lines already logged
    with open(os.path.join(out, "train_log.tsv"), "a") as f:
        f.write("train\t21\t9.99\t0.001\t1.0\n")
    full = train(out, "--steps", "50", "--stop-after", "35", "--resume")
    check(tr(full) == tr(ref), "resumed run logs exactly the training losses of the uninterrupted run (35 steps)")
    check(full[-1] == ref[-1] and full[-1][0] == "heldout", "and the same final held-out figure %s" % (ref[-1],))


def main():
    try:
        import torch  # noqa: F401
    except ImportError:
        print("SKIPPED: python3-torch is not installed (apt-get install python3-torch)")
        return SKIP
    if shutil.which("bible") is None:
        print("SKIPPED: the `bible` command (Debian package bible-kjv) is not installed")
        return SKIP
    which = sys.argv[1] if len(sys.argv) > 1 else "determinism"
    with tempfile.TemporaryDirectory() as tmp:
        {"determinism": determinism, "resume": resume}[which](tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
