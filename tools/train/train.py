#!/usr/bin/python3
"""Trains a byte-level causal Reformer on the King James Bible and exports it in HF format.

One command reproduces the bundled model (see models/default/MODEL_CARD.md):
    nice -n 10 /usr/bin/python3 tools/train/train.py --preset default --out models/default

Deterministic: fixed seeds, per-step data windows derived from (seed, step), fixed thread count;
two runs with the same arguments print identical loss logs (tests/train checks 2 x N steps).
Writes to --out: config.json, model.safetensors, rotations.safetensors (the fixed serving/training
rotations drawn from hash_seed as HF draws them), train_log.tsv, heldout_sample.txt, heldout.txt, split.json;
and a resumable state (optimizer included) to --state (default: <out>/../.train_state_<name>.pt,
never committed).
"""

import argparse
import json
import math
import os
import sys
import time


def _early_threads(argv):
    """Thread count, read before torch (and its BLAS) load so OpenBLAS/OpenMP use the same number."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


os.environ.setdefault("OPENBLAS_NUM_THREADS", _early_threads(sys.argv))
os.environ.setdefault("OMP_NUM_THREADS", _early_threads(sys.argv))

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402
import reformer_torch as R  # noqa: E402

PRESETS = {
    # The bundled model. Serving length 4096 (axial 64 x 64), mixed local/LSH, explicit buckets.
    "default": {
        "model": {
            "attn_layers": ["local", "lsh", "local", "lsh", "local", "lsh"],
            "hidden_size": 128,
            "num_attention_heads": 2,
            "attention_head_size": 64,
            "feed_forward_size": 512,
            "vocab_size": 258,
            "hidden_act": "relu",
            "is_decoder": True,
            "layer_norm_eps": 1e-12,
            "axial_pos_embds": True,
            "axial_pos_shape": [64, 64],
            "axial_pos_embds_dim": [32, 96],
            "max_position_embeddings": 4096,
            "lsh_attn_chunk_length": 64,
            "local_attn_chunk_length": 64,
            "lsh_num_chunks_before": 1,
            "lsh_num_chunks_after": 0,
            "local_num_chunks_before": 1,
            "local_num_chunks_after": 0,
            "num_hashes": 2,
            "num_buckets": 64,
            "hash_seed": 1234,
            "pad_token_id": 0,
            "eos_token_id": 2,
        },
        "seq_len": 4096,
        "batch": 1,
        "lr": 2e-3,
        "warmup": 200,
        "steps": 1450,
        "eval_docs": 8,
    },
    # A tiny config for the ctest: trains a few steps in seconds.
    "tiny": {
        "model": {
            "attn_layers": ["local", "lsh"],
            "hidden_size": 32,
            "num_attention_heads": 2,
            "attention_head_size": 16,
            "feed_forward_size": 64,
            "vocab_size": 258,
            "is_decoder": True,
            "axial_pos_embds": True,
            "axial_pos_shape": [16, 16],
            "axial_pos_embds_dim": [8, 24],
            "max_position_embeddings": 256,
            "lsh_attn_chunk_length": 32,
            "local_attn_chunk_length": 32,
            "num_hashes": 2,
            "num_buckets": 8,
            "hash_seed": 99,
            "eos_token_id": 2,
        },
        "seq_len": 256,
        "batch": 2,
        "lr": 3e-3,
        "warmup": 5,
        "steps": 20,
        "eval_docs": 2,
    },
}


def init_weights(model, std=0.02):
    n_layers = len(model.cfg["attn_layers"])
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "layer_norm" in name:
            torch.nn.init.ones_(p) if name.endswith("weight") else torch.nn.init.zeros_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        else:
            s = std
            if name.endswith("output.dense.weight"):
                s = std / math.sqrt(2 * n_layers)
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * s)


def lr_at(step, total, base, warmup, cooldown_frac=0.2):
    """Warmup, constant, then a linear cooldown to 5 % over the last cooldown_frac of the steps.

    Before the cooldown the rate does not depend on `total`, so a run can be resumed with a
    different --steps as long as the cooldown has not started, and `--steps N` from scratch
    reproduces it exactly."""
    if step < warmup:
        return base * (step + 1) / warmup
    cool_start = int(total * (1 - cooldown_frac))
    if step < cool_start:
        return base
    frac = (step - cool_start) / max(1, total - cool_start)
    return base * (1.0 - 0.95 * min(1.0, frac))


def batch_at(train_ids, step, seed, batch, seq_len):
    """The training windows of one step: a function of (seed, step) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, train_ids.numel() - seq_len, (batch,), generator=g)
    return torch.stack([train_ids[s:s + seq_len] for s in starts.tolist()])


def nll_bits(model, ids):
    """Sum over t >= 1 of -log2 p(x_t | x_<t) and the count, for a [B, T] batch of full documents."""
    logits = model(ids)
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = ids[:, 1:]
    nll = -lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return nll.sum().item() / math.log(2), tgt.numel()


def evaluate_docs(model, docs, batch=1):
    model.eval()
    bits, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(docs), batch):
            ids = torch.stack([corpus.to_ids(d) for d in docs[i:i + batch]])
            b, c = nll_bits(model, ids)
            bits += b
            n += c
    model.train()
    return bits / n


def export(model, cfg, out):
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, ".tmp_export")
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(R.hf_config(cfg), f, indent=2, sort_keys=True)
        f.write("\n")
    R.save_safetensors(os.path.join(tmp, "model.safetensors"), R.export_tensors(model), {"format": "pt"})
    R.save_safetensors(os.path.join(tmp, "rotations.safetensors"), model.rotations)
    for fn in ("config.json", "model.safetensors", "rotations.safetensors"):
        os.replace(os.path.join(tmp, fn), os.path.join(out, fn))
    os.rmdir(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, help="output directory (config.json, model.safetensors, ...)")
    ap.add_argument("--steps", type=int, help="total steps of the LR schedule (default: preset)")
    ap.add_argument("--stop-after", type=int, help="stop (and export) after this many steps; schedule unchanged")
    ap.add_argument("--max-minutes", type=float, default=0, help="stop after this wall time (0 = no limit)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/BLAS threads (1: on a shared 2-core machine OpenMP barriers cost more than they gain)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--state", help="resumable training state file (default: <out>/../.train_state_<preset>.pt)")
    ap.add_argument("--resume", action="store_true", help="continue from --state if it exists")
    ap.add_argument("--no-eval", action="store_true", help="skip held-out evaluation (tests)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    total = args.steps or preset["steps"]
    stop = min(total, args.stop_after or total)
    seq_len, batch = preset["seq_len"], preset["batch"]
    os.makedirs(args.out, exist_ok=True)
    state_path = args.state or os.path.join(os.path.dirname(os.path.abspath(args.out)),
                                            ".train_state_%s.pt" % args.preset)

    text = corpus.dump_kjv()
    train_text, held_text, info = corpus.split(text)
    train_ids = corpus.to_ids(train_text)
    docs = corpus.heldout_documents(held_text, seq_len)
    eval_docs = docs[:preset["eval_docs"]]
    with open(os.path.join(args.out, "split.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "heldout_sample.txt"), "wb") as f:
        f.write(corpus.sample_text(held_text))
    with open(os.path.join(args.out, "heldout.txt"), "wb") as f:  # the documents evaluate.py --heldout scores
        f.write(b"".join(docs))

    torch.manual_seed(args.seed)
    cfg = R.full_config(preset["model"])
    model = R.ReformerLM(cfg)
    init_weights(model)
    model.set_rotations(R.draw_rotations(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=preset["lr"], betas=(0.9, 0.98), eps=1e-9, weight_decay=0.01)
    start = 0
    log_path = os.path.join(args.out, "train_log.tsv")
    wall_before = 0.0
    if args.resume and os.path.exists(state_path):
        st = torch.load(state_path)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start = st["step"]
        wall_before = st["wall"]
        print("resumed from %s at step %d" % (state_path, start), flush=True)
        with open(log_path) as f:  # drop lines of steps after the checkpoint (they are redone)
            keep = [ln for ln in f if ln.startswith("#") and not ln.startswith("# done")
                    or (not ln.startswith("#") and int(ln.split("\t")[1]) <= start)]
        logf = open(log_path, "w")
        logf.writelines(keep)
        logf.write("# resumed at step %d with --steps %d\n" % (start, total))
    else:
        logf = open(log_path, "w")
        nparams = sum(p.numel() for p in model.parameters())
        logf.write("# preset=%s params=%d seq_len=%d batch=%d steps=%d seed=%d threads=%d\n" % (
            args.preset, nparams, seq_len, batch, total, args.seed, args.threads))
        logf.write("# kind\tstep\tvalue\tlr\twall_s\n")
        logf.flush()
        print("params %d" % nparams, flush=True)

    t0 = time.time()

    def wall():
        return wall_before + time.time() - t0

    def save_state(step):
        tmp = state_path + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "wall": wall()}, tmp)
        os.replace(tmp, state_path)
        export(model, cfg, args.out)

    model.train()
    step = start
    while step < stop:
        lr = lr_at(step, total, preset["lr"], preset["warmup"])
        for gr in opt.param_groups:
            gr["lr"] = lr
        ids = batch_at(train_ids, step, args.seed, batch, seq_len)
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bpb = loss.item() / math.log(2)
        logf.write("train\t%d\t%.9g\t%.6g\t%.1f\n" % (step, bpb, lr, wall()))
        if step % 10 == 0 or step == stop:
            logf.flush()
            print("step %d train %.4f bits/byte lr %.3g wall %.0fs" % (step, bpb, lr, wall()), flush=True)
        if not args.no_eval and (step % args.eval_every == 0 or step == stop):
            hb = evaluate_docs(model, eval_docs)
            logf.write("heldout\t%d\t%.9g\t%.6g\t%.1f\n" % (step, hb, lr, wall()))
            logf.flush()
            print("step %d heldout(%d docs) %.4f bits/byte" % (step, len(eval_docs), hb), flush=True)
        if step % args.ckpt_every == 0 or step == stop:
            save_state(step)
        if args.max_minutes and wall() > args.max_minutes * 60:
            print("wall-time limit reached at step %d" % step, flush=True)
            save_state(step)
            break
    logf.write("# done step=%d wall_s=%.1f\n" % (step, wall()))
    logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
