#!/usr/bin/python3
"""Writes a Reformer model directory with random weights (config.json + model.safetensors, HF names)
for load tests, e.g. the google/reformer-crime-and-punishment shape with a byte-level vocabulary:

  /usr/bin/python3 tools/loadgen/make_random_model.py --out /tmp/cp-random --shape crime-and-punishment

No rotations file is written: the server draws the LSH rotations from the config's hash_seed.
Only numpy is needed.
"""

import argparse
import json
import os
import struct

import numpy as np

SHAPES = {
    # google/reformer-crime-and-punishment (vocab 258 byte-level instead of the 320-piece spiece model,
    # so the server can tokenize text without a sentencepiece file).
    "crime-and-punishment": {
        "attn_layers": ["local", "lsh", "local", "lsh", "local", "lsh"],
        "hidden_size": 256, "num_attention_heads": 2, "attention_head_size": 64, "feed_forward_size": 512,
        "vocab_size": 258, "hidden_act": "relu", "is_decoder": True,
        "axial_pos_embds": True, "axial_pos_shape": [512, 1024], "axial_pos_embds_dim": [64, 192],
        "max_position_embeddings": 524288, "lsh_attn_chunk_length": 64, "local_attn_chunk_length": 64,
        "lsh_num_chunks_before": 1, "lsh_num_chunks_after": 0, "local_num_chunks_before": 1,
        "local_num_chunks_after": 0, "num_hashes": 1, "num_buckets": [64, 128], "hash_seed": 1,
        "pad_token_id": 0, "layer_norm_eps": 1e-12, "chunk_size_feed_forward": 0, "chunk_size_lm_head": 0,
        "tie_word_embeddings": False, "architectures": ["ReformerModelWithLMHead"], "model_type": "reformer",
    },
}


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    blobs = []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        blobs.append(arr.tobytes())
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make(config, seed):
    rng = np.random.default_rng(seed)
    H, V, F = config["hidden_size"], config["vocab_size"], config["feed_forward_size"]
    A = config["num_attention_heads"] * config["attention_head_size"]

    def w(*shape, scale=0.02):
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    t = [("reformer.embeddings.word_embeddings.weight", w(V, H))]
    a0, a1 = config["axial_pos_shape"]
    d0, d1 = config["axial_pos_embds_dim"]
    t.append(("reformer.embeddings.position_embeddings.weights.0", w(a0, 1, d0)))
    t.append(("reformer.embeddings.position_embeddings.weights.1", w(1, a1, d1)))
    for i, kind in enumerate(config["attn_layers"]):
        p = f"reformer.encoder.layers.{i}."
        t.append((p + "attention.layer_norm.weight", np.ones(H, np.float32)))
        t.append((p + "attention.layer_norm.bias", np.zeros(H, np.float32)))
        sa = p + "attention.self_attention."
        if kind == "lsh":
            t.append((sa + "query_key.weight", w(A, H)))
        else:
            t.append((sa + "query.weight", w(A, H)))
            t.append((sa + "key.weight", w(A, H)))
        t.append((sa + "value.weight", w(A, H)))
        t.append((p + "attention.output.dense.weight", w(H, A)))
        t.append((p + "feed_forward.layer_norm.weight", np.ones(H, np.float32)))
        t.append((p + "feed_forward.layer_norm.bias", np.zeros(H, np.float32)))
        t.append((p + "feed_forward.dense.dense.weight", w(F, H)))
        t.append((p + "feed_forward.dense.dense.bias", np.zeros(F, np.float32)))
        t.append((p + "feed_forward.output.dense.weight", w(H, F)))
        t.append((p + "feed_forward.output.dense.bias", np.zeros(H, np.float32)))
    t.append(("reformer.encoder.layer_norm.weight", np.ones(2 * H, np.float32)))
    t.append(("reformer.encoder.layer_norm.bias", np.zeros(2 * H, np.float32)))
    t.append(("lm_head.decoder.weight", w(V, 2 * H)))
    t.append(("lm_head.bias", np.zeros(V, np.float32)))
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--shape", default="crime-and-punishment", choices=sorted(SHAPES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    config = SHAPES[args.shape]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(args.out, "model.safetensors"), make(config, args.seed))
    print(f"wrote {args.out} ({args.shape}, random weights, seed {args.seed})")


if __name__ == "__main__":
    main()
