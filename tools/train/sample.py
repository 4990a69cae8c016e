#!/usr/bin/python3
"""Samples a continuation from a model directory with the PyTorch reference forward (full re-run per
byte, no cache: slow but exact). For eyeballing a model, e.g. the sample in MODEL_CARD.md:

    /usr/bin/python3 tools/train/sample.py --model-dir models/default --prompt "And God said" --bytes 300
"""

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import evaluate  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--prompt", default="And God said")
    ap.add_argument("--bytes", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = evaluate.load_model(args.model_dir)
    g = torch.Generator().manual_seed(args.seed)
    ids = [b + 2 for b in args.prompt.encode("utf-8")]
    limit = model.cfg["max_position_embeddings"]
    with torch.no_grad():
        for _ in range(args.bytes):
            if len(ids) >= limit:
                break
            logits = model(torch.tensor([ids]))[0, -1]
            logits[:2] = -float("inf")  # ids 0 and 1 are not bytes
            if args.temperature <= 0:
                nxt = int(torch.argmax(logits))
            else:
                p = torch.softmax(logits / args.temperature, dim=-1)
                nxt = int(torch.multinomial(p, 1, generator=g))
            ids.append(nxt)
    sys.stdout.write(bytes(i - 2 for i in ids).decode("utf-8", errors="replace") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
