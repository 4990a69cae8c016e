"""The PyTorch Reformer used for training reproduces the HF parity fixtures
(docs/engine-numerics.md) to 1e-4: every fixture's batched expected logits (with attention masks,
internal padding, factorised and auto-resolved buckets, bidirectional look-ahead) and every solo
row, plus the LSH buckets."""

import json
import os
import sys
import unittest

try:
    import torch
except ImportError:
    print("SKIPPED: python3-torch is not installed (apt-get install python3-torch)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import evaluate  # noqa: E402
import reformer_torch as R  # noqa: E402

SRC = os.environ.get("REFORMER_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
FIX = os.path.join(SRC, "tests", "fixtures")
TOL = 1e-4



class FixtureParity(unittest.TestCase):
    def _check(self, m, case_dir, inputs_dir):
        with open(os.path.join(inputs_dir, "inputs.json")) as f:
            inp = json.load(f)
        ids = torch.tensor(inp["input_ids"], dtype=torch.long)
        mask = torch.tensor(inp["attention_mask"]) if inp.get("attention_mask") is not None else None
        exp = R.load_safetensors(os.path.join(inputs_dir, "expected.safetensors"))
        debug = {}
        with torch.no_grad():
            logits = m(ids, mask, debug=debug)
        valid = exp["valid_mask"].bool()
        diff = (logits - exp["logits"]).abs()[valid].max().item()
        self.assertLess(diff, TOL, "%s logits max diff %g" % (inputs_dir, diff))
        for k, v in exp.items():
            if k.endswith(".buckets"):
                self.assertIn(k, debug, inputs_dir)
                self.assertTrue(torch.equal(debug[k], v), "%s %s differ" % (inputs_dir, k))
        return diff

    def test_all_fixtures(self):
        # The forward fixtures (generation/ holds generation fixtures, checked by the engine's tests).
        cases = sorted(d for d in os.listdir(FIX) if os.path.isfile(os.path.join(FIX, d, "expected.safetensors")))
        self.assertEqual(len(cases), 6)
        for c in cases:
            d = os.path.join(FIX, c)
            self._check(evaluate.load_model(d), d, d)
            solo = os.path.join(d, "solo")
            if os.path.isdir(solo):
                for r in sorted(os.listdir(solo)):
                    if os.path.isdir(os.path.join(solo, r)):
                        # num_buckets: null resolves per model instance from its first call's length
                        self._check(evaluate.load_model(d), d, os.path.join(solo, r))

    def test_hash_seed_rotations_equal_across_layers(self):
        cfg = {"attn_layers": ["local", "lsh", "lsh"], "num_attention_heads": 2, "attention_head_size": 8,
               "num_hashes": 2, "num_buckets": [4, 8], "hash_seed": 7}
        rots = R.draw_rotations(R.full_config(cfg))
        self.assertEqual(sorted(rots), ["encoder.layers.1.lsh_rotations", "encoder.layers.2.lsh_rotations"])
        self.assertEqual(tuple(rots["encoder.layers.1.lsh_rotations"].shape), (2, 8, 2, 6))
        torch.manual_seed(7)
        self.assertTrue(torch.equal(rots["encoder.layers.2.lsh_rotations"], torch.randn(2, 8, 2, 6)))


if __name__ == "__main__":
    unittest.main()
