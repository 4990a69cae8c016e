#!/usr/bin/python3
"""Plots train_log.tsv (train.py) as a PNG: training bits/byte (raw and a 50-step moving average)
and held-out bits/byte against the step.

    /usr/bin/python3 tools/train/plot_loss.py models/default/train_log.tsv models/default/loss_curve.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path):
    train, held = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            kind, step, value = line.split("\t")[:3]
            (train if kind == "train" else held).append((int(step), float(value)))
    return train, held


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    train, held = read_log(argv[1])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    xs = [s for s, _ in train]
    ys = [v for _, v in train]
    ax.plot(xs, ys, color="#9ecae1", linewidth=0.6, label="train (per step)")
    w = 50
    if len(ys) > w:
        avg = [sum(ys[i - w:i]) / w for i in range(w, len(ys) + 1)]
        ax.plot(xs[w - 1:], avg, color="#08519c", linewidth=1.5, label="train (%d-step mean)" % w)
    if held:
        ax.plot([s for s, _ in held], [v for _, v in held], "o-", color="#d62728", markersize=3,
                label="held-out (8 documents x 4096 bytes)")
    ax.set_xlabel("step (1 step = 4096 bytes)")
    ax.set_ylabel("bits per byte")
    ax.set_ylim(0, 8.5)
    ax.grid(True, alpha=0.3)
    ax.set_title("byte-level Reformer on the King James Bible")
    ax.legend()
    fig.tight_layout()
    fig.savefig(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
