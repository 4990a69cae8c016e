"""The bundled model in models/default: well-formed for the engine (config, HF names, serving
rotations = HF's hash_seed draws), small enough for the repository, and it models English: the
held-out sample scores well below uniform (8 bits/byte) and far better than a line-shuffled copy
(this fails for random weights). Exit 77 = skipped (torch absent)."""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("REFORMER_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
MODEL = os.path.join(SRC, "models", "default")
sys.path.insert(0, os.path.dirname(HERE))


class DefaultModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch

        torch.set_num_threads(1)
        import evaluate

        cls.model = evaluate.load_model(MODEL)
        with open(os.path.join(MODEL, "config.json")) as f:
            cls.cfg = json.load(f)

    def test_config(self):
        c = self.cfg
        self.assertEqual(c["vocab_size"], 258)
        self.assertTrue(c["is_decoder"])
        self.assertEqual(set(c["attn_layers"]), {"local", "lsh"})
        self.assertGreaterEqual(c["max_position_embeddings"], 4096)
        self.assertGreaterEqual(c["axial_pos_shape"][0] * c["axial_pos_shape"][1], c["max_position_embeddings"])
        self.assertEqual(sum(c["axial_pos_embds_dim"]), c["hidden_size"])
        self.assertIsInstance(c["num_buckets"], int)
        self.assertIsInstance(c["hash_seed"], int)
        self.assertFalse(c["tie_word_embeddings"])

    def test_rotations_are_the_hash_seed_draws(self):
        import reformer_torch as R

        rots = R.load_safetensors(os.path.join(MODEL, "rotations.safetensors"))
        expect = R.draw_rotations(R.full_config(self.cfg))
        self.assertEqual(sorted(rots), sorted(expect))
        self.assertEqual(len(rots), self.cfg["attn_layers"].count("lsh"))
        for k in rots:
            self.assertTrue(bool((rots[k] == expect[k]).all()), k)

    def test_size_limit(self):
        total = sum(os.path.getsize(os.path.join(MODEL, f)) for f in os.listdir(MODEL))
        self.assertLess(total, 25 * 1024 * 1024)

    def test_real_text_beats_shuffled(self):
        import torch
        import evaluate

        with open(os.path.join(MODEL, "heldout_sample.txt"), "rb") as f:
            data = f.read()
        self.assertGreater(len(data), 2000)
        real = evaluate.score_documents(self.model, [data])["bits_per_byte"]
        lines = data.split(b"\n")
        g = torch.Generator().manual_seed(0)
        shuffled = b"\n".join(lines[i] for i in torch.randperm(len(lines), generator=g).tolist())
        words = data.split(b" ")
        word_shuffled = b" ".join(words[i] for i in torch.randperm(len(words), generator=g).tolist())
        s1 = evaluate.score_documents(self.model, [shuffled])["bits_per_byte"]
        s2 = evaluate.score_documents(self.model, [word_shuffled])["bits_per_byte"]
        print("held-out sample %.4f bits/byte, lines shuffled %.4f, words shuffled %.4f" % (real, s1, s2))
        self.assertLess(real, 3.0)
        self.assertGreater(s2, real + 0.5)
        self.assertGreater(s1, real)


if __name__ == "__main__":
    try:
        import torch  # noqa: F401
    except ImportError:
        print("SKIPPED: python3-torch is not installed (apt-get install python3-torch)")
        sys.exit(77)
    unittest.main()
