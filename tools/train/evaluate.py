#!/usr/bin/python3
"""Held-out bits per byte of a model directory, with the PyTorch reference forward (reformer_torch).

    /usr/bin/python3 tools/train/evaluate.py --model-dir models/default --heldout
    /usr/bin/python3 tools/train/evaluate.py --model-dir models/default --file models/default/heldout_sample.txt

Definition (the C++ engine's `score` must agree within 0.01): a text is cut into documents of
--doc-len bytes (the last one may be shorter; a file shorter than --doc-len is one document); each
document is scored alone (batch 1, no attention mask, ids = byte + 2, the engine's internal padding
when its length is not a multiple of the chunk lcm) and

    bits/byte = - sum over documents, t >= 1 of log2 p(x_t | x_<t)  /  sum over documents of (len - 1)

(the first byte of each document is not predicted). --heldout scores the full held-out split of
corpus.py in documents of exactly --doc-len bytes (the remainder shorter than --doc-len is dropped,
as during training), the text models/default/heldout.txt holds.
Prints one JSON line.
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402
import reformer_torch as R  # noqa: E402


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    m = R.ReformerLM(cfg)
    R.load_state(m, R.load_safetensors(os.path.join(model_dir, "model.safetensors")))
    rp = os.path.join(model_dir, "rotations.safetensors")
    if os.path.exists(rp):
        m.set_rotations(R.load_safetensors(rp))
    m.eval()
    return m


def doc_bits(model, data):
    """(bits, predicted bytes) of one document scored alone."""
    ids = corpus.to_ids(data).unsqueeze(0)
    with torch.no_grad():
        logits = model(ids)
    lp = torch.log_softmax(logits[0, :-1], dim=-1)
    nll = -lp.gather(-1, ids[0, 1:].unsqueeze(-1)).sum().item()
    return nll / math.log(2), ids.shape[1] - 1


def score_documents(model, docs):
    bits, n = 0.0, 0
    for d in docs:
        if len(d) < 2:
            continue
        b, c = doc_bits(model, d)
        bits += b
        n += c
    return {"bits_per_byte": bits / n, "documents": len(docs), "predicted_bytes": n}


def split_file(data, doc_len):
    return [data[i:i + doc_len] for i in range(0, len(data), doc_len)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--file", help="score this file (documents of --doc-len bytes)")
    ap.add_argument("--heldout", action="store_true", help="score the corpus.py held-out split")
    ap.add_argument("--shuffle-lines", action="store_true", help="score --file with its lines shuffled (seed 0)")
    ap.add_argument("--doc-len", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model_dir)
    if args.heldout:
        _, held, _ = corpus.split(corpus.dump_kjv())
        res = score_documents(model, corpus.heldout_documents(held, args.doc_len))
        res["text"] = "heldout split (corpus.py)"
    elif args.file:
        with open(args.file, "rb") as f:
            data = f.read()
        if args.shuffle_lines:
            lines = data.split(b"\n")
            g = torch.Generator().manual_seed(0)
            data = b"\n".join(lines[i] for i in torch.randperm(len(lines), generator=g).tolist())
        res = score_documents(model, split_file(data, args.doc_len))
        res["text"] = args.file + (" (lines shuffled)" if args.shuffle_lines else "")
    else:
        ap.error("give --file or --heldout")
    res["doc_len"] = args.doc_len
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
