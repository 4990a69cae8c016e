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
        # 1 KB of the held-out sample keeps this cheap with Debian torch's reference BLAS
        import torch
        import evaluate

        with open(os.path.join(MODEL, "heldout_sample.txt"), "rb") as f:
            data = f.read()
        self.assertGreater(len(data), 2000)
        data = data[:1024]
        data = data[:data.rfind(b"\n") + 1]
        real = evaluate.score_documents(self.model, [data])["bits_per_byte"]
        words = data.split(b" ")
        g = torch.Generator().manual_seed(0)
        shuffled = b" ".join(words[i] for i in torch.randperm(len(words), generator=g).tolist())
        self.assertEqual(sorted(shuffled), sorted(data))
        fake = evaluate.score_documents(self.model, [shuffled])["bits_per_byte"]
        print("held-out text (%d bytes) %.4f bits/byte, words shuffled %.4f" % (len(data), real, fake))
        self.assertLess(real, 3.0)
        self.assertGreater(fake, real + 0.4)


if __name__ == "__main__":
    try:
        import torch  # noqa: F401
    except ImportError:
        print("SKIPPED: python3-torch is not installed (apt-get install python3-torch)")
        sys.exit(77)
    unittest.main()
