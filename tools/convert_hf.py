#!/usr/bin/python3
"""Converts a Hugging Face Reformer checkpoint directory into the layout reformer-server loads.

    /usr/bin/python3 tools/convert_hf.py --in ~/reformer-enwik8 --out models/enwik8 [--seq-len 65536]

Input directory: config.json and pytorch_model.bin (a torch state dict; loaded with
weights_only=True, nothing is executed) or model.safetensors.
Output directory:
  config.json            copied unchanged
  model.safetensors      every tensor under its HF name as float32 (fp16/bf16/f64 are widened or
                         narrowed to f32); the pre-v4.31 mask-value buffers (self_mask_value_*,
                         mask_value_*) are dropped; the LM bias is written as lm_head.decoder.bias
                         and lm_head.bias (one tensor in HF)
  rotations.safetensors  only when config.json sets hash_seed: the rotations HF would use,
                         encoder.layers.{i}.lsh_rotations [heads, head_size, num_hashes, rotation_size/2]
                         float32, drawn exactly as HF does (torch.manual_seed(hash_seed) right before
                         each LSH layer's torch.randn). With num_buckets null the bucket count is
                         resolved from --seq-len (HF's rule, engine-numerics §1.3); without it no
                         rotations are written. Without hash_seed HF draws fresh random rotations
                         every call, so there are none to export.
Exit status 0 on success, 1 on a bad input (message on stderr).
"""

import argparse
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "train"))
import reformer_torch as R  # noqa: E402

_DROP_SUFFIXES = ("self_mask_value_float16", "self_mask_value_float32", "mask_value_float16",
                  "mask_value_float32")


def read_checkpoint(in_dir):
    st = os.path.join(in_dir, "model.safetensors")
    bin_path = os.path.join(in_dir, "pytorch_model.bin")
    if os.path.exists(bin_path):
        sd = torch.load(bin_path, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict):
            raise ValueError("%s does not hold a state dict" % bin_path)
        return sd
    if os.path.exists(st):
        return R.load_safetensors(st)
    raise ValueError("%s has neither pytorch_model.bin nor model.safetensors" % in_dir)


def convert_tensors(sd):
    out = {}
    for name, t in sd.items():
        if not torch.is_tensor(t):
            raise ValueError("entry %s is not a tensor" % name)
        if name.endswith(_DROP_SUFFIXES):
            continue
        if not t.is_floating_point():
            raise ValueError("tensor %s has non-float dtype %s" % (name, t.dtype))
        out[name] = t.detach().to(torch.float32).contiguous()
    bias = out.get("lm_head.decoder.bias", out.get("lm_head.bias"))
    if bias is None:
        raise ValueError("no LM bias (lm_head.bias or lm_head.decoder.bias)")
    out["lm_head.decoder.bias"] = bias
    out["lm_head.bias"] = bias.clone()
    return out


def rotations_for(cfg, seq_len):
    full = R.full_config(cfg)
    if "lsh" not in full["attn_layers"] or full.get("hash_seed") is None:
        return None, "no hash_seed (or no LSH layer): no fixed rotations"
    nb = full["num_buckets"]
    if nb is None:
        if not seq_len:
            return None, "num_buckets is null: pass --seq-len to resolve it"
        padded = seq_len
        c = full["lsh_attn_chunk_length"]
        if padded % c:
            padded += c - padded % c
        nb = R.resolve_num_buckets(full, padded)
    return R.draw_rotations(full, nb), "num_buckets %s" % (nb,)


def convert(in_dir, out_dir, seq_len=None):
    with open(os.path.join(in_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = convert_tensors(read_checkpoint(in_dir))
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(os.path.join(in_dir, "config.json"), os.path.join(out_dir, "config.json"))
    R.save_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, {"format": "pt"})
    rots, note = rotations_for(cfg, seq_len)
    if rots is not None:
        R.save_safetensors(os.path.join(out_dir, "rotations.safetensors"), rots)
    return len(tensors), note


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="in_dir", required=True)
    ap.add_argument("--out", dest="out_dir", required=True)
    ap.add_argument("--seq-len", type=int, help="serving length, to resolve num_buckets: null")
    args = ap.parse_args(argv)
    try:
        n, note = convert(args.in_dir, args.out_dir, args.seq_len)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print("convert_hf: %s" % e, file=sys.stderr)
        return 1
    print("wrote %d tensors to %s (%s)" % (n, args.out_dir, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
