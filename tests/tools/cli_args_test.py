#!/usr/bin/python3
"""The tools' command lines (reformer-cli, reformer_bench, offline_throughput) are strict and consistent.

  * `--help` prints the usage to stdout and exits 0 with nothing on stderr, for every tool and command;
  * an unknown flag, a malformed number, a value out of range, a missing argument: usage on stderr, exit 2,
    before any work (`reformer-cli score --compute_type=fp8 FILE` used to run and exit 0);
  * reformer-cli picks where a command runs by one rule: offline with --model, else --server (default
    localhost:8001) -- `score FILE`, `embed FILE` and `generate` without either all go to localhost:8001;
  * generate takes the same flag syntax as the others (`--json=true`, `-h`, `help generate`, `--timeout`).
Usage: cli_args_test.py BIN_DIR SOURCE_DIR
"""
import os
import subprocess
import sys
import tempfile
import unittest

BIN, SOURCE = (sys.argv[1:3] + [None, None])[:2]
MODEL = os.path.join(SOURCE or ".", "tests", "fixtures", "f5_short_seq_standard_attention")


def run(tool, *args):
    env = dict(os.environ, OMP_WAIT_POLICY="passive", OMP_NUM_THREADS="1")
    return subprocess.run([os.path.join(BIN, tool), *args], capture_output=True, text=True, timeout=120, env=env)


def run_bytes(tool, *args):
    env = dict(os.environ, OMP_WAIT_POLICY="passive", OMP_NUM_THREADS="1")
    return subprocess.run([os.path.join(BIN, tool), *args], capture_output=True, timeout=120, env=env)


class CliArgsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.text = os.path.join(cls.tmp.name, "a.txt")
        with open(cls.text, "w") as f:
            f.write("In the beginning God created the heaven and the earth.\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assert_help(self, tool, *args):
        r = run(tool, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertIn("usage:", r.stdout)
        return r.stdout

    def assert_usage_error(self, tool, *args, says):
        r = run(tool, *args)
        self.assertEqual(r.returncode, 2, f"{tool} {args}: exit {r.returncode}\n{r.stdout}{r.stderr}")
        self.assertIn(says, r.stderr)
        self.assertEqual(r.stdout, "")

    def test_help_goes_to_stdout(self):
        top = self.assert_help("reformer-cli", "--help")
        for command in ("forward", "score", "generate", "health", "info", "embed"):
            self.assertIn(command, top)
            self.assertIn(f"reformer-cli {command}", self.assert_help("reformer-cli", command, "--help"))
        self.assertEqual(self.assert_help("reformer-cli", "help", "score"),
                         self.assert_help("reformer-cli", "score", "-h"))
        self.assertIn("--window", self.assert_help("reformer-cli", "score", "--help"))
        # generate is parsed like every other command (it used to say "--help needs a value", exit 2).
        self.assertEqual(self.assert_help("reformer-cli", "help", "generate"),
                         self.assert_help("reformer-cli", "generate", "-h"))
        generate = self.assert_help("reformer-cli", "generate", "--help")
        for flag in ("--timeout=SECONDS", "--seed=S", "--max_new_tokens=N", "[default: localhost:8001]"):
            self.assertIn(flag, generate)
        self.assertIn("--tokens", self.assert_help("reformer_bench", "--help"))
        self.assertIn("--lengths_file", self.assert_help("offline_throughput", "--help"))

    def test_reformer_cli_is_strict(self):
        self.assert_usage_error("reformer-cli", says="usage: reformer-cli <command>")
        self.assert_usage_error("reformer-cli", "frobnicate", says="unknown command 'frobnicate'")
        self.assert_usage_error("reformer-cli", "score", "--quantize=int8", self.text,
                                says="unknown flag --quantize")
        self.assert_usage_error("reformer-cli", "score", "--compute_type=fp8", self.text,
                                says="--compute_type=fp8: expected one of float32, bfloat16, int8, auto")
        self.assert_usage_error("reformer-cli", "score", "--model", MODEL, "--threads", "two", self.text,
                                says="--threads two: expected an integer")
        self.assert_usage_error("reformer-cli", "score", "--model", MODEL, "--window", "1", self.text,
                                says="--window must be 0")
        self.assert_usage_error("reformer-cli", "score", "--model", MODEL, "--window=-5", self.text,
                                says="--window=-5")
        self.assert_usage_error("reformer-cli", "score", "--model", MODEL, says="missing FILE...")
        self.assert_usage_error("reformer-cli", "score", "--model", MODEL, "--server", "h:1", self.text,
                                says="not both")
        self.assert_usage_error("reformer-cli", "score", "--threads", "1", self.text, says="--threads applies")
        self.assert_usage_error("reformer-cli", "forward", "--model", MODEL, says="missing --inputs")
        self.assert_usage_error("reformer-cli", "forward", "--model", MODEL, "--inputs", "i.json", "--output",
                                "o.safetensors", "--per-documents", says="did you mean --per-document?")
        self.assert_usage_error("reformer-cli", "embed", "--piece-bytes", "1e3", self.text, says="expected an integer")
        self.assert_usage_error("reformer-cli", "health", "--timeout", "soon", says="--timeout soon")
        self.assert_usage_error("reformer-cli", "info", "extra", says="unexpected argument 'extra'")
        gen = ["generate", "--model", MODEL, "--inputs", "i.json"]
        self.assert_usage_error("reformer-cli", *gen, "--max_new_tokens", "2", "--timeout_s", "5",
                                says="unknown flag --timeout_s (did you mean --timeout?)")
        self.assert_usage_error("reformer-cli", *gen, says="missing --max_new_tokens")
        self.assert_usage_error("reformer-cli", *gen, "--max_new_tokens", "2", "--server", "h:1", says="not both")
        self.assert_usage_error("reformer-cli", *gen, "--max_new_tokens", "2", "--prompt", "x",
                                says="exactly one of --inputs and --prompt")
        self.assert_usage_error("reformer-cli", *gen, "--max_new_tokens", "2", "--seed", "-1", says="--seed -1")
        self.assert_usage_error("reformer-cli", *gen, "--max_new_tokens", "2", "--json=maybe", says="--json=maybe")
        # --logprobs without --json was ignored without a word.
        self.assert_usage_error("reformer-cli", *gen, "--max_new_tokens", "2", "--logprobs", says="--logprobs needs --json")
        self.assert_usage_error("reformer-cli", "generate", "--prompt", "x", "--max_new_tokens", "2", "--threads", "1",
                                says="--threads applies")

    def test_generate_reads_inputs_strictly(self):
        # A float, a boolean or an id beyond int32 in --inputs was truncated or wrapped into another id
        # (3.5 -> 3, 4294967297 -> 1) and generated from silently; an attention_mask was ignored; an empty
        # row failed only after the rows before it had run on a server (exit 1) but up front offline (exit 2).
        # --max_new_tokens beyond int32 was clamped to 2^31-1 on its way to a server.
        cases = [('{"input_ids": [[1, 2, 3.5]]}', "row 0 position 2: 3.5 is not a 32-bit integer"),
                 ('{"input_ids": [[1, 4294967297]]}', "row 0 position 1: 4294967297 is not a 32-bit integer"),
                 ('{"input_ids": [[1, true]]}', "row 0 position 1: true is not a 32-bit integer"),
                 ('{"input_ids": [[1, 2], []]}', "input_ids row 1 is empty"),
                 ('{"input_ids": [[1, 2], 7]}', "input_ids row 1 is not a list"),
                 ('{"input_ids": [[1, 2]], "attention_mask": [[1, 1]]}', 'unknown key "attention_mask"')]
        for i, (content, says) in enumerate(cases):
            path = os.path.join(self.tmp.name, f"gen{i}.json")
            with open(path, "w") as f:
                f.write(content)
            # Checked before connecting (nothing listens on port 1) and the same way offline.
            self.assert_usage_error("reformer-cli", "generate", "--server", "127.0.0.1:1", "--inputs", path,
                                    "--max_new_tokens", "2", says=says)
            self.assert_usage_error("reformer-cli", "generate", "--model", MODEL, "--inputs", path,
                                    "--max_new_tokens", "2", says=says)
        self.assert_usage_error("reformer-cli", "generate", "--server", "127.0.0.1:1", "--prompt", "x",
                                "--max_new_tokens", "99999999999", says="--max_new_tokens 99999999999")
        self.assert_usage_error("reformer-cli", "generate", "--server", "127.0.0.1:1", "--prompt", "x",
                                "--max_new_tokens", "0", says="--max_new_tokens 0")

    def test_a_binary_inputs_file_is_named_and_escaped(self):
        # nlohmann's parse error echoed the raw bytes of the file to the terminal, unbounded.
        path = os.path.join(self.tmp.name, "binary.json")
        with open(path, "wb") as f:
            f.write(b"\x8f\x1b[2J\xff" + bytes(range(256)) * 400)
        says = f"{path}: not valid JSON at byte 0 (near \"\\x8f\\x1b[2J\\xff\\x00"
        for args in (["generate", "--server", "127.0.0.1:1", "--max_new_tokens", "2"],
                     ["generate", "--model", MODEL, "--max_new_tokens", "2"],
                     ["forward", "--model", MODEL, "--output", os.path.join(self.tmp.name, "o.safetensors")]):
            r = run_bytes("reformer-cli", *args, "--inputs", path)
            self.assertEqual(r.returncode, 2, r.stderr)
            error = r.stderr.rstrip(b"\n").split(b"\n")[-1]  # offline, the model's load log comes first
            self.assertIn(says.encode(), error)
            self.assertTrue(all(0x20 <= c < 0x7f for c in error), error)
            self.assertLess(len(error), 400, error)
            self.assertEqual(r.stdout, b"")

    def test_bench_and_offline_throughput_are_strict(self):
        self.assert_usage_error("reformer_bench", "--tokens", "4k", says="--tokens 4k: expected an integer")
        self.assert_usage_error("reformer_bench", "--case", "gpt2", says="one of enwik8, cp")
        self.assert_usage_error("reformer_bench", "--rounds=0", says="--rounds=0")
        self.assert_usage_error("reformer_bench", "--verbose", says="unknown flag --verbose")
        self.assert_usage_error("offline_throughput", "--model_dir", MODEL, says="missing --lengths_file")
        self.assert_usage_error("offline_throughput", "--model_dir", MODEL, "--lengths_file", "x", "--repeat", "1x",
                                says="--repeat 1x")
        self.assert_usage_error("offline_throughput", "--model_dir", MODEL, "--lengths_file", "x", "--outputs", "all2",
                                says="one of token_logprobs")

    def test_score_and_embed_share_the_server_default(self):
        # Neither --model nor --server: both talk to localhost:8001 (nothing listens there in CI; if something
        # does, both at least agree and neither prints the usage).
        score = run("reformer-cli", "score", self.text, "--timeout", "5")
        embed = run("reformer-cli", "embed", self.text, "--timeout", "5")
        generate = run("reformer-cli", "generate", "--prompt", "x", "--max_new_tokens", "1", "--json=true",
                       "--timeout", "5")
        for r in (score, embed, generate):
            self.assertNotEqual(r.returncode, 2, r.stderr)
            self.assertNotIn("usage:", r.stderr)
            if r.returncode != 0:
                self.assertIn("localhost:8001", r.stderr)
        self.assertEqual(score.returncode, embed.returncode)
        self.assertEqual(score.returncode, generate.returncode)
        # With --model the same command runs offline.
        offline = run("reformer-cli", "score", "--model", os.path.join(SOURCE, "models", "default"), "--json",
                      "--threads", "1", self.text)
        self.assertEqual(offline.returncode, 0, offline.stderr)
        self.assertIn("bits_per_byte", offline.stdout)


if __name__ == "__main__":
    if not (BIN and SOURCE):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    unittest.main(argv=[sys.argv[0]])
