#!/usr/bin/python3
"""reformer-server as a new user meets it: help, bad configuration, environment variables, its name.

  * `--help` prints every flag (and its REFORMER_* variable) to stdout and exits 0, nothing on stderr;
  * nonsense values (negative budget, zero batch size, port out of range, malformed number, an unknown
    flag, a stray argument) exit 2 before anything starts, naming the flag or the variable;
  * a misspelt REFORMER_* variable is a warning naming the nearest flag, and the server still starts;
  * after its OpenMP re-exec the process is still called reformer-server (/proc/<pid>/comm), not "exe";
  * a second server on the busy gRPC or HTTP port of the first exits non-zero with a clear message.
Usage: server_cli_test.py SERVER_BINARY SOURCE_DIR
"""
import os
import signal
import subprocess
import sys
import time
import unittest

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL = os.path.join(SOURCE, "tests", "fixtures", "f5_short_seq_standard_attention")
BASE_ARGS = ["--model_dir", MODEL, "--bind_address", "127.0.0.1", "--workers", "1", "--threads_per_worker", "1"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFORMER_")}
    env.update(extra)
    return env


def run(args, env=None, timeout=60):
    return subprocess.run([SERVER] + args, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else clean_env())


class Started:
    """A server on free ports; reads the listening line."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([SERVER] + BASE_ARGS + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.line = self.proc.stdout.readline()

    def fields(self):
        return dict(kv.split("=", 1) for kv in self.line.split() if "=" in kv)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc, err


class ServerCliTest(unittest.TestCase):
    def test_help_goes_to_stdout_and_exits_0(self):
        r = run(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertIn("usage: reformer-server", r.stdout)
        for flag, env in (("--grpc_port", "REFORMER_GRPC_PORT"), ("--memory_budget_bytes", "REFORMER_MEMORY_BUDGET_BYTES"),
                          ("--workers", "REFORMER_WORKERS"), ("--drain_timeout_s", "REFORMER_DRAIN_TIMEOUT_S")):
            self.assertIn(flag, r.stdout)
            self.assertIn(env, r.stdout)
        self.assertEqual(run(["-h"]).stdout, r.stdout)

    def test_nonsense_exits_2_naming_the_flag(self):
        cases = [
            (["--memory_budget_bytes=-1"], {}, "--memory_budget_bytes"),
            (["--max_batch_size", "0"], {}, "--max_batch_size"),
            (["--grpc_port=70000"], {}, "--grpc_port"),
            (["--workers=two"], {}, "--workers"),
            (["--batch_length_ratio=nan"], {}, "--batch_length_ratio"),
            (["--http_request_timeout_s=1e308"], {}, "--http_request_timeout_s"),  # a "timeout" of forever
            (["--drain_min_s", "1e9"], {}, "--drain_min_s"),  # would keep the ports up after SIGTERM for years
            (["--compute_typ=fp8"], {}, "unknown flag --compute_typ"),
            (["--max_batch_tokens=10"], {}, "--max_batch_tokens=10 is below its minimum, the model's context"),
            (["extra_argument"], {}, "unexpected argument"),
            # Generation's step buffers beyond the budget: found once the model is loaded, exited 1.
            (["--memory_budget_bytes", "100000", "--warmup=false"], {},
             "do not fit the memory budget (100000 bytes free): raise --memory_budget_bytes"),
            ([], {"REFORMER_MEMORY_BUDGET_BYTES": "-1"}, "REFORMER_MEMORY_BUDGET_BYTES"),
            ([], {"REFORMER_WARMUP": "maybe"}, "REFORMER_WARMUP"),
        ]
        for args, env, expect in cases:
            with self.subTest(args=args, env=env):
                t0 = time.time()
                r = run(BASE_ARGS + args, env=clean_env(**env))
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(expect, r.stderr)
                self.assertNotIn("listening", r.stdout)
                self.assertLess(time.time() - t0, 30)

    def test_misspelt_variable_warns_and_the_server_keeps_its_name(self):
        env = clean_env(REFORMER_DRAIN_TIMEOUT_SECONDS="5")
        env.pop("OMP_WAIT_POLICY", None)  # so the server re-executes itself (engine/base/openmp_env.h)
        server = Started(["--grpc_port", "0", "--http_port", "0", "--warmup=false"], env)
        try:
            self.assertIn("grpc_port=", server.line)
            with open(f"/proc/{server.proc.pid}/comm") as f:
                self.assertEqual(f.read().strip(), "reformer-server")
            with open(f"/proc/{server.proc.pid}/environ", "rb") as f:
                self.assertIn(b"OMP_WAIT_POLICY=passive", f.read().split(b"\0"))
        finally:
            rc, err = server.stop()
        self.assertEqual(rc, 0, err)
        self.assertIn("REFORMER_DRAIN_TIMEOUT_SECONDS matches no flag", err)
        self.assertIn("nearest: REFORMER_DRAIN_TIMEOUT_S (--drain_timeout_s)", err)

    def test_small_request_limits_still_start(self):
        # The warm-up forward asked for 64 tokens and every output whatever the limits, so a server run with
        # --max_tokens_per_request below 64 or a --max_response_bytes that fits only an embedding (both are
        # valid, documented limits) exited 1 with "warm-up forward failed" instead of starting.
        server = Started(["--grpc_port", "0", "--http_port", "0", "--max_tokens_per_request", "16",
                          "--max_response_bytes", "1000"], clean_env())
        try:
            self.assertIn("grpc_port=", server.line)
            ready = False
            for line in server.proc.stderr:  # until READY, or the end of stderr when the process exits
                if "READY" in line:
                    ready = True
                    break
            self.assertTrue(ready, "the server did not reach READY")
        finally:
            rc, err = server.stop()
        self.assertEqual(rc, 0, err)
        self.assertNotIn("warm-up forward failed", err)

    def busy_port_case(self, which):
        first = Started(["--grpc_port", "0", "--http_port", "0", "--warmup=false"], clean_env())
        try:
            port = first.fields()[which + "_port"]
            ports = {"grpc": "0", "http": "0", which: port}
            r = run(BASE_ARGS + ["--grpc_port", ports["grpc"], "--http_port", ports["http"], "--warmup=false"],
                    timeout=60)
            self.assertNotEqual(r.returncode, 0, f"a second server on a busy {which} port must not start")
            self.assertNotIn("listening", r.stdout)
            self.assertIn(port, r.stderr)
            self.assertIn("in use", r.stderr)
        finally:
            rc, err = first.stop()
        self.assertEqual(rc, 0, err)

    def test_busy_http_port_is_an_error(self):
        self.busy_port_case("http")

    def test_busy_grpc_port_is_an_error(self):
        # gRPC's default SO_REUSEPORT let a second server share the port and split the traffic.
        self.busy_port_case("grpc")

if __name__ == "__main__":
    if not SERVER or not os.path.exists(SERVER):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    unittest.main(argv=[sys.argv[0]])
