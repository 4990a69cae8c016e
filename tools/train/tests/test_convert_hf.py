"""tools/convert_hf.py on tiny synthetic HF checkpoints: names and values survive, old mask buffers
are dropped, fp16 is widened, both LM bias names are written, rotations equal HF's hash_seed draws
(also for num_buckets: null resolved from --seq-len), and the converted model computes the same
logits as the original. Bad inputs exit with status 1."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

try:
    import torch
except ImportError:
    print("SKIPPED: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import reformer_torch as R  # noqa: E402

SRC = os.environ.get("REFORMER_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
CONVERT = os.path.join(SRC, "tools", "convert_hf.py")

CFG = {
    "architectures": ["ReformerModelWithLMHead"], "model_type": "reformer",
    "attn_layers": ["local", "lsh", "local", "lsh"], "hidden_size": 32, "num_attention_heads": 2,
    "attention_head_size": 16, "feed_forward_size": 64, "vocab_size": 258, "is_decoder": True,
    "axial_pos_shape": [8, 16], "axial_pos_embds_dim": [8, 24], "max_position_embeddings": 128,
    "lsh_attn_chunk_length": 16, "local_attn_chunk_length": 16, "num_hashes": 2, "num_buckets": [4, 4],
    "hash_seed": 5,
}


def _make_checkpoint(d, cfg, fp16=False):
    torch.manual_seed(3)
    m = R.ReformerLM(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["lm_head.bias"] = sd["lm_head.decoder.bias"]  # HF state dicts hold both (one tensor)
    sd["reformer.encoder.layers.1.attention.self_attention.self_mask_value_float32"] = torch.tensor(-1e5)
    sd["reformer.encoder.layers.0.attention.self_attention.mask_value_float32"] = torch.tensor(-1e9)
    if fp16:
        sd = {k: v.half() for k, v in sd.items()}
    os.makedirs(d, exist_ok=True)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return m, sd


def _run(*args):
    return subprocess.run([sys.executable, CONVERT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


class ConvertHf(unittest.TestCase):
    def test_converts_bin_and_rotations(self):
        with tempfile.TemporaryDirectory() as tmp:
            m, sd = _make_checkpoint(os.path.join(tmp, "in"), CFG)
            r = _run("--in", os.path.join(tmp, "in"), "--out", os.path.join(tmp, "out"))
            self.assertEqual(r.returncode, 0, r.stderr)
            out = R.load_safetensors(os.path.join(tmp, "out", "model.safetensors"))
            self.assertFalse([k for k in out if "mask_value" in k])
            self.assertEqual(set(out), set(m.state_dict()) | {"lm_head.bias"})
            for k, v in m.state_dict().items():
                self.assertTrue(torch.equal(out[k], v), k)
            self.assertTrue(torch.equal(out["lm_head.bias"], sd["lm_head.decoder.bias"]))
            rots = R.load_safetensors(os.path.join(tmp, "out", "rotations.safetensors"))
            self.assertEqual(sorted(rots), ["encoder.layers.1.lsh_rotations", "encoder.layers.3.lsh_rotations"])
            torch.manual_seed(5)
            expect = torch.randn(2, 16, 2, 4)  # heads, head size, hashes, (4+4)/2
            for v in rots.values():
                self.assertTrue(torch.equal(v, expect))
            with open(os.path.join(tmp, "out", "config.json")) as f:
                self.assertEqual(json.load(f), CFG)
            # the converted directory computes what the original model computes
            m.set_rotations(rots)
            m2 = R.ReformerLM(CFG)
            R.load_state(m2, out)
            m2.set_rotations(rots)
            ids = torch.randint(2, 258, (1, 100))
            with torch.no_grad():
                self.assertTrue(torch.equal(m(ids), m2(ids)))

    def test_fp16_and_auto_buckets(self):
        cfg = dict(CFG, num_buckets=None)
        with tempfile.TemporaryDirectory() as tmp:
            _, sd = _make_checkpoint(os.path.join(tmp, "in"), cfg, fp16=True)
            r = _run("--in", os.path.join(tmp, "in"), "--out", os.path.join(tmp, "nolen"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("--seq-len", r.stdout)
            self.assertFalse(os.path.exists(os.path.join(tmp, "nolen", "rotations.safetensors")))
            r = _run("--in", os.path.join(tmp, "in"), "--out", os.path.join(tmp, "out"), "--seq-len", "128")
            self.assertEqual(r.returncode, 0, r.stderr)
            out = R.load_safetensors(os.path.join(tmp, "out", "model.safetensors"))
            w = "reformer.embeddings.word_embeddings.weight"
            self.assertEqual(out[w].dtype, torch.float32)
            self.assertTrue(torch.equal(out[w], sd[w].float()))
            rots = R.load_safetensors(os.path.join(tmp, "out", "rotations.safetensors"))
            # 128 / chunk 16 = 8 chunks -> 2^bit_length(16)-1 = 16 buckets (<= 2*max(sqrt(8),16)): int 16
            self.assertEqual(tuple(rots["encoder.layers.1.lsh_rotations"].shape), (2, 16, 2, 8))

    def test_bad_input(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "in"))
            with open(os.path.join(tmp, "in", "config.json"), "w") as f:
                json.dump(CFG, f)
            r = _run("--in", os.path.join(tmp, "in"), "--out", os.path.join(tmp, "out"))
            self.assertEqual(r.returncode, 1)
            self.assertIn("neither pytorch_model.bin nor model.safetensors", r.stderr)


if __name__ == "__main__":
    unittest.main()
