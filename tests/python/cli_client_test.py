#!/usr/bin/python3
"""reformer-cli client commands against a running reformer-server.

Makes a random byte-level model (tools/loadgen/make_random_model.py, crime-and-punishment shape),
starts reformer-server on it (--grpc_port 0), and checks `health`, `info --json`, `score --json`
(one window and several: totals add up, bits/byte consistent, and the same figures as the offline
`score --model`, text and JSON), `embed --normalize` (unit norm), a file far above the server's --max_tokens_per_request (the
bundled model's heldout.txt: the README's figure, as offline), empty files and directories, and `generate --server` (the same
tokens as offline `generate --model`, greedy, sampled with a seed, recompute mode; without --seed offline
picks one, reports it, and the server given it repeats the tokens).
Usage: cli_client_test.py SERVER_BINARY CLI_BINARY SOURCE_DIR
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import unittest

import server_harness

SERVER, CLI, SOURCE = (sys.argv[1:4] + [None, None, None])[:3]


def start_server(model, name):
    """reformer-server on `model` at a free port: (server, address)."""
    server = server_harness.Server(SERVER, model, "--model_name", name)
    return server, f"127.0.0.1:{server.grpc_port}"


class CliClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        model = cls.model = os.path.join(cls.tmp.name, "model")
        subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "tools/loadgen/make_random_model.py"),
                        "--out", model, "--seed", "3"], check=True, capture_output=True)
        cls.server, cls.addr = start_server(model, "cp")
        cls.text = os.path.join(cls.tmp.name, "a.txt")
        with open(cls.text, "w") as f:
            f.write("In the beginning God created the heaven and the earth. " * 5)
        cls.n = os.path.getsize(cls.text)  # 275 bytes = 275 byte-level tokens

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()  # its exit code is not this test's concern
        cls.tmp.cleanup()

    def cli(self, *args, ok=True):
        r = subprocess.run([CLI, *args, "--server", self.addr], capture_output=True, text=True, timeout=300)
        if r.returncode < 0:
            self.fail(f"reformer-cli died with signal {-r.returncode} (a known cause: libsentencepiece "
                      f"linked before libprotobuf)\n{r.stderr}")
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def wait_ready(self):
        import time
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.cli("health", ok=False).returncode == 0:
                return
            time.sleep(0.2)
        self.fail("server not ready")

    def test_health_and_info(self):
        self.wait_ready()
        self.assertIn("ready=yes", self.cli("health").stdout)
        info = json.loads(self.cli("info", "--json").stdout)
        self.assertEqual(info["name"], "cp")
        self.assertEqual(info["vocab_size"], 258)
        self.assertEqual(info["embedding_size"], 512)
        self.assertTrue(info["causal"])
        self.assertEqual(info["tokenizer"], "bytes")

    def offline(self, *args):
        r = subprocess.run([CLI, "score", "--model", self.model, *args], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_score_whole_and_in_windows(self):
        self.wait_ready()
        whole = json.loads(self.cli("score", self.text, "--json").stdout)
        self.assertEqual(whole["windows"], 1)
        self.assertEqual(whole["tokens"], self.n)
        self.assertEqual(whole["bytes"], self.n - 1)  # the first token is not predicted
        self.assertAlmostEqual(whole["bits_per_byte"], -whole["total_logprob"] / math.log(2) / (self.n - 1),
                               places=9)
        self.assertAlmostEqual(whole["perplexity"], math.exp(-whole["total_logprob"] / (self.n - 1)), places=9)
        self.assertGreater(whole["bits_per_byte"], 0)
        windows = json.loads(self.cli("score", self.text, "--json", "--window", "100").stdout)
        self.assertEqual(windows["windows"], 3)
        self.assertEqual(windows["tokens"], self.n)
        self.assertEqual(windows["bytes"], self.n - 3)  # one unpredicted first token per window
        self.assertNotAlmostEqual(windows["bits_per_byte"], whole["bits_per_byte"], places=6)

    def test_score_equals_offline_score(self):
        self.wait_ready()
        # Several exact windows of 1,024 tokens (the last one shorter).
        long_text = os.path.join(self.tmp.name, "long.txt")
        with open(long_text, "w") as f:
            f.write("And God said, Let there be light: and there was light. " * 40)  # 2,240 bytes
        served = json.loads(self.cli("score", long_text, "--json", "--window", "1024").stdout)
        offline = json.loads(self.offline(long_text, "--json", "--window", "1024"))
        self.assertEqual(served["windows"], 3)
        for key in ("bytes", "tokens"):
            self.assertEqual(served[key], offline[key], key)
        self.assertAlmostEqual(served["bits_per_byte"], offline["bits_per_byte"], places=6)
        self.assertAlmostEqual(served["perplexity"], offline["perplexity"], places=5)
        # The text format is the offline one, figure for figure.
        self.assertEqual(self.cli("score", self.text).stdout, self.offline(self.text))

    def test_long_file_scores_as_offline_and_as_the_readme_says(self):
        # heldout.txt (208,896 bytes) is far above the default model's --max_tokens_per_request (32,768): the
        # client tokenizes it in slices and prints the offline line, which README.md quotes.
        default = os.path.join(SOURCE, "models", "default")
        heldout = os.path.join(default, "heldout.txt")
        with open(os.path.join(SOURCE, "README.md")) as f:
            readme_line = next(l for l in f if l.startswith("models/default/heldout.txt: "))
        server, addr = start_server(default, "default")
        try:
            served = subprocess.run([CLI, "score", "--server", addr, heldout], capture_output=True, text=True,
                                    timeout=300, cwd=SOURCE)
            served_json = subprocess.run([CLI, "score", "--server", addr, "--json", heldout], capture_output=True,
                                         text=True, timeout=300)
        finally:
            server.stop()
        self.assertEqual(served.returncode, 0, served.stderr)
        offline = subprocess.run([CLI, "score", "--model", default, "--json", heldout], capture_output=True,
                                 text=True, timeout=300)
        self.assertEqual(offline.returncode, 0, offline.stderr)
        self.assertEqual(served.stdout.replace(SOURCE + "/", ""), readme_line)
        s, o = json.loads(served_json.stdout), json.loads(offline.stdout)
        self.assertEqual((s["tokens"], s["bytes"], s["windows"]), (208896, 208845, 51))
        for key in ("tokens", "bytes", "bits_per_byte", "perplexity"):
            self.assertEqual(s[key], o[key], key)

    def test_embed(self):
        self.wait_ready()
        out = [json.loads(l) for l in self.cli("embed", self.text, "--normalize").stdout.splitlines()]
        self.assertEqual(len(out), 1)
        self.assertEqual(out[0]["tokens"], self.n)
        self.assertEqual(len(out[0]["embedding"]), 512)
        self.assertAlmostEqual(sum(x * x for x in out[0]["embedding"]), 1.0, places=4)

    def offline_generate(self, *args):
        r = subprocess.run([CLI, *args, "--model", self.model], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def test_generate_equals_offline_generate(self):
        self.wait_ready()
        inputs = os.path.join(self.tmp.name, "prompts.json")
        with open(inputs, "w") as f:
            json.dump({"input_ids": [[65, 110, 100, 32, 71, 111, 100], [84], [73, 110, 32, 116, 104, 101]]}, f)
        for extra in ([], ["--temperature", "0.9", "--top_k", "20", "--seed", "5"], ["--mode", "recompute"]):
            args = ["generate", "--inputs", inputs, "--max_new_tokens", "12", "--ignore_eos", "--json", *extra]
            served = [json.loads(l) for l in self.cli(*args).stdout.splitlines()]
            r = subprocess.run([CLI, *args, "--model", self.model], capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            offline = [json.loads(l) for l in r.stdout.splitlines()]
            self.assertEqual(len(served), 3)
            for s, o in zip(served, offline):
                self.assertEqual(s["new_tokens"], o["new_tokens"], extra)
                self.assertEqual(s["finish_reason"], o["finish_reason"])
                self.assertEqual(len(s["new_tokens"]), 12)
        # Sampling without --seed: offline picks a seed per run and reports it like the server does; the
        # server given that seed repeats the tokens (and offline given it again, too).
        sample = ["generate", "--prompt", "And God said", "--max_new_tokens", "16", "--ignore_eos",
                  "--temperature", "1"]
        picked = [self.offline_generate(*sample, "--json") for _ in range(2)]
        self.assertNotEqual(picked[0]["seed"], picked[1]["seed"])
        for p in picked:
            self.assertGreater(p["seed"], 0)
            served = json.loads(self.cli(*sample, "--json", "--seed", str(p["seed"])).stdout)
            self.assertEqual((served["new_tokens"], served["seed"]), (p["new_tokens"], p["seed"]))
            again = self.offline_generate(*sample, "--json", "--seed", str(p["seed"]))
            self.assertEqual(again["new_tokens"], p["new_tokens"])
        # Text mode reports the picked seed on stderr; the server given it prints the same text.
        r = subprocess.run([CLI, *sample, "--model", self.model], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        seed = re.search(r"\[0: 16 tokens, finish_reason length, seed (\d+)\]", r.stderr)
        self.assertIsNotNone(seed, r.stderr)
        self.assertEqual(self.cli(*sample, "--seed", seed.group(1)).stdout, r.stdout)
        # Streaming text mode: the text on stdout, a summary with the finish reason on stderr.
        r = self.cli("generate", "--prompt", "And God said", "--max_new_tokens", "8", "--ignore_eos")
        self.assertIn("finish_reason length", r.stderr)
        self.assertGreater(len(r.stdout.strip("\n")), 0)

    def test_errors(self):
        self.wait_ready()
        r = self.cli("score", os.path.join(self.tmp.name, "missing.txt"), ok=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot read", r.stderr)
        # An empty file has no embedding; a directory is not a text file (score and embed, both modes).
        empty = os.path.join(self.tmp.name, "empty.txt")
        open(empty, "w").close()
        r = self.cli("embed", empty, ok=False)
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertIn("empty.txt is empty; there is nothing to embed", r.stderr)
        for args in (["score"], ["embed"], ["score", "--model", self.model]):
            r = subprocess.run([CLI, *args, self.tmp.name] + ([] if "--model" in args else ["--server", self.addr]),
                               capture_output=True, text=True, timeout=300)
            self.assertEqual((r.returncode, r.stdout), (1, ""), args)
            self.assertIn(f"{self.tmp.name} is a directory, not a text file", r.stderr)
        r = subprocess.run([CLI, "health", "--server", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        # A file that is not UTF-8 (Latin-1 text) cannot travel in reformer.v1's string fields: score and
        # embed on a server said "the message (N bytes) is not a valid reformer.v1.TokenizeRequest" under
        # libprotobuf's own error lines; now they name the file and the byte, and offline still reads it.
        latin1 = os.path.join(self.tmp.name, "latin1.txt")
        with open(latin1, "wb") as f:
            f.write("Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade.\n".encode("latin-1"))
        for command in ("score", "embed"):
            r = self.cli(command, latin1, ok=False)
            self.assertEqual((r.returncode, r.stdout), (1, ""), r.stderr)
            self.assertIn("latin1.txt is not UTF-8 text (byte 3 starts no valid sequence)", r.stderr)
            self.assertNotIn("libprotobuf", r.stderr)
        r = subprocess.run([CLI, "score", "--model", self.model, latin1], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Pieces smaller than a character keep it whole (they used to split it and fail the same way).
        wide = os.path.join(self.tmp.name, "wide.txt")
        with open(wide, "w", encoding="utf-8") as f:
            f.write("\u00e9\u00e9\u65e5\u672c\U0001F600")
        for piece in ("1", "2"):
            r = self.cli("embed", "--piece-bytes", piece, wide)
            self.assertEqual(json.loads(r.stdout)["tokens"], 14)
        # A huge --timeout is no deadline (1e300 s overflowed into a deadline in the past: DEADLINE_EXCEEDED).
        r = self.cli("score", self.text, "--timeout", "1e300")
        self.assertIn("bits/byte", r.stdout)
        self.cli("generate", "--prompt", "And God said", "--max_new_tokens", "2", "--timeout", "1e300")
        # A generation the model refuses exits 2 with the same message offline and on the server (the
        # server's INVALID_ARGUMENT used to exit 1 where offline exited 2).
        for args in (["--stop", ""], ["--top_p", "1.5"]):
            gen = ["generate", "--prompt", "And God said", "--max_new_tokens", "4", *args]
            served = self.cli(*gen, ok=False)
            offline = subprocess.run([CLI, *gen, "--model", self.model], capture_output=True, text=True, timeout=300)
            self.assertEqual((served.returncode, offline.returncode), (2, 2), served.stderr + offline.stderr)
            says = "stop string 0 is empty" if args[0] == "--stop" else "top_p must be in [0, 1], got 1.5"
            self.assertIn(says, served.stderr)
            self.assertIn(says, offline.stderr)


if __name__ == "__main__":
    if not (SERVER and CLI and SOURCE):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    unittest.main(argv=[sys.argv[0]])
