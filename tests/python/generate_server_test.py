#!/usr/bin/python3
"""reformer.v1 Generate against a real reformer-server on the bundled default model (byte-level
tokenizer), with Debian's python3-grpcio:
  1. a text prompt streams text and ids; the last message has the finish reason, usage and the seed
     the server picked; the streamed text equals the whole text decoded at once;
  2. a stop string taken from that output ends the next run with FINISH_REASON_STOP and the text
     before it;
  3. GetModelInfo and ServerMetadata report the compute type and ISA level;
  4. /metrics has the generation series (tokens, time to first token, time per output token, active
     sequences, cache bytes back at 0);
  5. SIGTERM while a stream is running and another client does not read: every stream ends, the
     server exits 0 within --drain_timeout_s plus a few seconds.
Nothing here skips: a missing tool fails the test. Usage: generate_server_test.py SERVER SOURCE_DIR
"""
import os
import re
import signal
import sys
import threading
import time
import unittest
import urllib.request

import server_harness

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL_DIR = os.path.join(SOURCE, "models", "default")
DRAIN_TIMEOUT_S = 3


class Server(server_harness.Server):
    def __init__(self):
        super().__init__(SERVER, MODEL_DIR, "--workers", "1", "--threads_per_worker", "1",
                         "--generate_threads_per_worker", "1", "--generate_max_unsent", "2",
                         "--drain_timeout_s", str(DRAIN_TIMEOUT_S))

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as r:
            return r.read().decode()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)$", text, re.M)
    if m is None:
        raise AssertionError(f"{name} not in /metrics")
    return float(m.group(1))


class GenerateServerTest(server_harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pb, pbg, cls.v1, v1g = cls.compile_stubs(SOURCE, "grpc_service.proto", "reformer.proto")
        cls.connect(Server())
        cls.kserve = pbg.GRPCInferenceServiceStub(cls.channel)
        cls.api = v1g.ReformerServiceStub(cls.channel)

    def request(self, text, n, **kw):
        return self.v1.GenerateRequest(prompt=self.v1.Document(text=text), max_new_tokens=n, **kw)

    def collect(self, req):
        msgs = list(self.api.Generate(req, timeout=120))
        return msgs, [t for m in msgs for t in m.token_ids], "".join(m.text for m in msgs)

    def test_1_text_prompt_streams_and_stops(self):
        msgs, ids, text = self.collect(self.request("And God said", 40, ignore_eos=True))
        self.assertEqual(len(ids), 40)
        self.assertGreater(len(msgs), 1)
        last = msgs[-1]
        self.assertEqual(last.finish_reason, self.v1.FINISH_REASON_LENGTH)
        self.assertEqual(last.usage.generated_tokens, 40)
        self.assertEqual(last.usage.prompt_tokens, len("And God said"))
        self.assertNotEqual(last.seed, 0)
        for m in msgs[:-1]:
            self.assertEqual(m.finish_reason, self.v1.FINISH_REASON_UNSPECIFIED)
        self.assertEqual(text.encode(), bytes(i - 2 for i in ids if i >= 2))  # byte tokenizer: id = byte + 2
        # A stop string from the middle of that text: the same greedy run ends before it.
        cut = len(text) // 2
        stop = text[cut:cut + 3]
        self.assertEqual(len(stop), 3)
        msgs2, _, text2 = self.collect(self.request("And God said", 40, ignore_eos=True, stop=[stop]))
        self.assertEqual(msgs2[-1].finish_reason, self.v1.FINISH_REASON_STOP)
        self.assertEqual(text2, text[:text.find(stop)])
        print(f"\n'And God said' -> {text!r}")

    def test_2_model_info_reports_compute_type_and_isa(self):
        info = self.api.GetModelInfo(self.v1.GetModelInfoRequest())
        self.assertEqual(info.compute_type, "float32")
        self.assertTrue(info.isa)
        self.assertEqual(info.max_new_tokens, 4095)
        meta = self.kserve.ServerMetadata(self.pb.ServerMetadataRequest())
        self.assertEqual(meta.compute_type, "float32")
        self.assertEqual(meta.isa, info.isa)

    def test_3_metrics(self):
        list(self.api.Generate(self.request("In the beginning", 8), timeout=120))
        text = self.server.metrics()
        self.assertGreaterEqual(metric(text, "reformer_generated_tokens_total"), 8)
        self.assertGreaterEqual(metric(text, "reformer_generate_time_to_first_token_seconds_count"), 1)
        self.assertGreaterEqual(metric(text, "reformer_generate_time_per_output_token_seconds_count"), 7)
        self.assertEqual(metric(text, "reformer_generate_active_sequences"), 0)
        self.assertEqual(metric(text, "reformer_generate_cache_bytes"), 0)

    def test_9_sigterm_ends_streams_and_exits(self):
        grpc = self.grpc
        # A client that reads one message and then nothing (its sequence pauses, holding its cache), and one
        # that reads everything of a long generation.
        unread = self.api.Generate(self.request("And God said", 4000, ignore_eos=True))
        next(unread)
        # Recompute mode: every step is a forward over the whole text, so these 4000 tokens take far longer than
        # the drain timeout (a cached step of this small model is fast enough to finish them within it).
        reading = self.api.Generate(self.request("Let there be", 4000, ignore_eos=True,
                                                 mode=self.v1.DECODE_MODE_RECOMPUTE))
        next(reading)
        result = {}

        def drain():
            try:
                for _ in reading:
                    pass
                result["code"] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                result["code"] = e.code()
        t = threading.Thread(target=drain)
        t.start()
        start = time.time()
        self.server.proc.send_signal(signal.SIGTERM)
        code = self.server.proc.wait(timeout=DRAIN_TIMEOUT_S + 15)
        elapsed = time.time() - start
        t.join(timeout=30)
        self.assertEqual(code, 0, self.server.stderr_tail())
        self.assertFalse(t.is_alive())
        # The long stream could not finish within the drain timeout: it was ended, not left hanging.
        self.assertIn(result.get("code"), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
        print(f"\nSIGTERM with 2 open generation streams: exit {code} after {elapsed:.1f} s "
              f"(--drain_timeout_s={DRAIN_TIMEOUT_S}); the reading stream ended {result.get('code')}")
        unread.cancel()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
