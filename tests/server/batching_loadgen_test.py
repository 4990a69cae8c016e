#!/usr/bin/python3
"""End-to-end check of tools/loadgen/loadgen.py against a real reformer-server (fixture model, loopback,
ephemeral ports): counts, throughput and latency fields, the background long document, the loopback
guard, and a clean SIGTERM drain of the server afterwards.

usage: batching_loadgen_test.py <path to reformer-server>
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE = os.environ.get("REFORMER_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
LOADGEN = os.path.join(SOURCE, "tools", "loadgen", "loadgen.py")
MODEL = os.path.join(SOURCE, "tests", "fixtures", "f1_mixed_causal_multihash_rightpad")
SERVER = None


def read_json(path):
    with open(path) as f:
        return json.load(f)


class LoadgenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loadgen-test-")
        cls.server_log = open(os.path.join(cls.tmp, "server.log"), "w+")
        cls.server = subprocess.Popen(
            [SERVER, "--model_dir", MODEL, "--model_name", "f1", "--bind_address", "127.0.0.1",
             "--grpc_port", "0", "--http_port", "0", "--workers", "2", "--threads_per_worker", "1",
             "--drain_timeout_s", "20"],
            stdout=subprocess.PIPE, stderr=cls.server_log, text=True)
        cls.port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = cls.server.stdout.readline()
            if not line:
                break
            m = re.search(r"grpc_port=(\d+)", line)
            if m:
                cls.port = int(m.group(1))
                break
        if cls.port is None:
            cls.server.kill()
            cls.server_log.seek(0)
            raise RuntimeError("reformer-server did not report its port:\n" + cls.server_log.read())

    @classmethod
    def tearDownClass(cls):
        if cls.server.poll() is None:
            cls.server.kill()
            cls.server.wait()
        cls.server.stdout.close()
        cls.server_log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def loadgen(self, *args, timeout=120):
        return subprocess.run([sys.executable, LOADGEN, *args], capture_output=True, text=True, timeout=timeout)

    def test_a_closed_loop_counts_and_percentiles(self):
        out = os.path.join(self.tmp, "r.json")
        lengths = os.path.join(self.tmp, "lengths.txt")
        r = self.loadgen("--target", f"127.0.0.1:{self.port}", "--model", "f1", "--concurrency", "4",
                         "--lengths", "16-256", "--requests", "40", "--duration", "60", "--json", out,
                         "--dump-lengths", lengths)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("req/s", r.stdout)
        self.assertIn("p99", r.stdout)
        res = read_json(out)
        self.assertEqual(res["requests_ok"], 40)
        self.assertEqual(res["errors"], {})
        with open(lengths) as f:
            sent = [int(x) for x in f.read().split()]
        self.assertEqual(len(sent), 40)
        self.assertTrue(all(16 <= n <= 256 for n in sent))
        self.assertEqual(res["tokens_ok"], sum(sent))
        lat = res["latency"]
        self.assertEqual(lat["count"], 40)
        self.assertLessEqual(lat["p50_ms"], lat["p90_ms"])
        self.assertLessEqual(lat["p90_ms"], lat["p99_ms"])
        self.assertLessEqual(lat["p99_ms"], lat["max_ms"])
        self.assertGreater(res["requests_per_s"], 0)

    def test_b_background_long_document(self):
        out = os.path.join(self.tmp, "bg.json")
        r = self.loadgen("--target", f"localhost:{self.port}", "--model", "f1", "--concurrency", "2",
                         "--lengths", "16", "--requests", "30", "--duration", "60", "--background-long", "256",
                         "--long-head-start", "0.2", "--json", out)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        res = read_json(out)
        self.assertEqual(res["requests_ok"], 30)
        bg = res["background_long"]
        self.assertGreaterEqual(bg["long_requests"], 1)
        self.assertEqual(bg["long_ok"], bg["long_requests"])
        self.assertIn("short requests entirely during it", r.stdout)

    def test_c_bounded_by_duration(self):
        out = os.path.join(self.tmp, "d.json")
        t0 = time.monotonic()
        r = self.loadgen("--target", f"127.0.0.1:{self.port}", "--model", "f1", "--concurrency", "2",
                         "--lengths", "32", "--requests", "1000000", "--duration", "1.5", "--json", out)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLess(time.monotonic() - t0, 60)
        self.assertLess(read_json(out)["requests_ok"], 1000000)

    def test_d_refuses_non_loopback_targets(self):
        for target in ("10.1.2.3:8001", "192.168.0.1:1", "[2001:db8::1]:8001"):
            r = self.loadgen("--target", target, "--requests", "1", timeout=30)
            self.assertEqual(r.returncode, 2, target)
            self.assertIn("non-loopback", r.stderr)
        r = self.loadgen("--target", f"127.0.0.1:{self.port}", "--concurrency", "0", timeout=30)
        self.assertEqual(r.returncode, 2)

    def test_z_server_drains_on_sigterm(self):
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait(timeout=60), 0)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    SERVER = sys.argv.pop(1)
    unittest.main(verbosity=2)
