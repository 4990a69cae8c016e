#!/usr/bin/python3
"""Hostile clients against a real reformer-server (issue 11), with Debian's python3-grpcio.

Starts reformer-server on port 0 with the bundled default model (byte-level tokenizer, so the text
paths are reachable) and sends, in order:
  1. size bombs: declared shapes far beyond the bytes sent, on raw INT32/INT64 ids, typed contents,
     the attention mask, raw and typed BYTES text, reformer.v1 Embed/Score/Tokenize, mismatched bytes,
     a message above the receive limit. Each must be refused with its code and message while the
     server's peak RSS (VmHWM, reset before each case) grows by less than 64 MiB;
  2. on one ModelStreamInfer stream: bad messages (bombs, garbage bytes, an unknown model) between
     good ones: each bad one gets an error response with its id, and the stream keeps serving;
  3. a stream client that sends 300 requests for ~1 MiB of logits each and never reads: the server
     stops reading it (it takes far fewer than 300), its peak RSS grows by less than 64 MiB, and
     other clients are still served;
  4. 64 HTTP connections that sent half a request: /readyz and /metrics still answer;
  5. a second server on the same gRPC port: it fails to start (no SO_REUSEPORT sharing);
  6. SIGTERM while the never-reading stream and the slow HTTP connections are still open: the server
     exits 0 within --drain_timeout_s plus a few seconds.
Prints a table: case, code, peak RSS growth. Nothing here skips: a missing tool fails the test.
Usage: hostile_client_test.py SERVER_BINARY SOURCE_DIR
"""
import os
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

import server_harness
from server_harness import proc_status, reset_peak

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL_DIR = os.path.join(SOURCE, "models", "default")
MODEL = "default"
MiB = 1 << 20
BOMB_GROWTH_LIMIT = 64 * MiB
DRAIN_TIMEOUT_S = 5
TABLE = []  # (case, code, growth bytes)


def start_server():
    return server_harness.Server(
        SERVER, MODEL_DIR, "--workers", "2", "--threads_per_worker", "1", "--drain_timeout_s", str(DRAIN_TIMEOUT_S),
        # One document per batch: the engine's working memory is then that of one document, warmed
        # before the unread-stream case, so its peak RSS growth measures the stream's buffering
        # (multi-document batches' working memory is the scheduler's memory budget's to bound).
        "--max_batch_size", "1")


class HostileClientTest(server_harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pb, pbg, cls.v1, v1g = cls.compile_stubs(SOURCE, "grpc_service.proto", "reformer.proto")
        cls.connect(start_server(), options=[("grpc.max_receive_message_length", 1 << 30),
                                             ("grpc.max_send_message_length", 1 << 30)])
        cls.kserve = pbg.GRPCInferenceServiceStub(cls.channel)
        cls.api = v1g.ReformerServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        print("\ncase | code | peak RSS growth")
        for case, code, growth in TABLE:
            print(f"{case} | {code} | {growth / MiB:.1f} MiB")

    # --- helpers ----------------------------------------------------------------------------------

    def infer_request(self, inputs, raw=None, outputs=(), rid="bomb"):
        req = self.pb.ModelInferRequest(model_name=MODEL, id=rid)
        for name, dtype, shape, typed in inputs:
            t = req.inputs.add(name=name, datatype=dtype, shape=shape)
            if typed is not None:
                if dtype == "BYTES":
                    t.contents.bytes_contents.extend(typed)
                elif dtype == "INT32":
                    t.contents.int_contents.extend(typed)
                else:
                    t.contents.int64_contents.extend(typed)
        for r in raw or []:
            req.raw_input_contents.append(r)
        for o in outputs:
            req.outputs.add(name=o)
        return req

    def good_request(self, rid, tokens=8, outputs=("embedding",)):
        ids = b"".join(int(3 + i % 200).to_bytes(4, "little") for i in range(tokens))
        return self.infer_request([("input_ids", "INT32", [1, tokens], None)], [ids], outputs, rid)

    def refused(self, case, call, code, fragments):
        """`call` must fail with `code` and every fragment, with VmHWM growth < 64 MiB."""
        pid = self.server.pid
        base = proc_status(pid, "VmRSS")
        reset_peak(pid)
        with self.assertRaises(self.grpc.RpcError, msg=case) as ctx:
            call()
        growth = proc_status(pid, "VmHWM") - base
        TABLE.append((case, ctx.exception.code().name, growth))
        self.assertEqual(ctx.exception.code(), code, f"{case}: {ctx.exception.details()}")
        for f in fragments:
            self.assertIn(f, ctx.exception.details(), case)
        self.assertLess(growth, BOMB_GROWTH_LIMIT, f"{case}: peak RSS grew by {growth / MiB:.1f} MiB")

    # --- 1. size bombs ----------------------------------------------------------------------------

    def test_1_size_bombs(self):
        g = self.grpc.StatusCode
        infer = lambda req: (lambda: self.kserve.ModelInfer(req, timeout=60))
        eight = bytes(8)
        cases = [
            ("ModelInfer raw INT64 [1,2^27], 8 bytes",
             self.infer_request([("input_ids", "INT64", [1, 1 << 27], None)], [eight]),
             g.INVALID_ARGUMENT, ["raw content has 8 bytes", "needs 1073741824"]),
            ("ModelInfer raw INT32 [1,2^29], 8 bytes",
             self.infer_request([("input_ids", "INT32", [1, 1 << 29], None)], [eight]),
             g.INVALID_ARGUMENT, ["raw content has 8 bytes"]),
            ("ModelInfer raw INT64 [1,2^40], 8 bytes",
             self.infer_request([("input_ids", "INT64", [1, 1 << 40], None)], [eight]),
             g.INVALID_ARGUMENT, ["raw content has 8 bytes"]),
            ("ModelInfer raw INT64 [2^40,2^40]",
             self.infer_request([("input_ids", "INT64", [1 << 40, 1 << 40], None)], [eight]),
             g.INVALID_ARGUMENT, ["too many elements"]),
            ("ModelInfer typed INT64 [1,2^27], 2 values",
             self.infer_request([("input_ids", "INT64", [1, 1 << 27], [1, 2])]),
             g.INVALID_ARGUMENT, ["2 typed elements", "needs 134217728"]),
            ("ModelInfer attention_mask [1,2^27] beside input_ids [1,2]",
             self.infer_request([("input_ids", "INT64", [1, 2], None), ("attention_mask", "INT64", [1, 1 << 27], None)],
                                [bytes(16), eight]),
             g.INVALID_ARGUMENT, ["attention_mask", "must match"]),
            ("ModelInfer BYTES raw [2^27], 4 bytes",
             self.infer_request([("text", "BYTES", [1 << 27], None)], [bytes(4)]),
             g.INVALID_ARGUMENT, ["cannot hold the 134217728 elements"]),
            ("ModelInfer BYTES raw [2^40], 5 bytes",
             self.infer_request([("text", "BYTES", [1 << 40], None)], [b"\x01\0\0\0x"]),
             g.INVALID_ARGUMENT, ["cannot hold"]),
            ("ModelInfer BYTES typed [2^27], 1 string",
             self.infer_request([("text", "BYTES", [1 << 27], [b"abc"])]),
             g.INVALID_ARGUMENT, ["1 typed elements", "needs 134217728"]),
            ("ModelInfer raw INT64 [2,3], 40 bytes (mismatch)",
             self.infer_request([("input_ids", "INT64", [2, 3], None)], [bytes(40)]),
             g.INVALID_ARGUMENT, ["40 bytes", "needs 48"]),
            ("ModelInfer 300K padded positions for 1 token",
             self.infer_request([("input_ids", "INT32", [1, 300000], None), ("attention_mask", "BOOL", [1, 300000], None)],
                                [bytes(1200000), b"\x01" + bytes(299999)], ["logits"]),
             g.INVALID_ARGUMENT, ["300000 positions", "context of 4096"]),
        ]
        for case, req, code, fragments in cases:
            self.refused(case, infer(req), code, fragments)
        # Above the gRPC receive limit (16 bytes x max_tokens_per_request + 1 MiB): refused by gRPC.
        big = self.infer_request([("input_ids", "INT64", [1, 1 << 18], None)], [bytes(8 << 18)])
        self.refused("ModelInfer 2 MiB message (above the receive limit)", infer(big), g.RESOURCE_EXHAUSTED, [])
        # reformer.v1: documents and tokens bounded while decoding.
        many = self.v1.EmbedRequest()
        for _ in range(100000):
            many.documents.add().ids.ids.append(5)
        self.refused("Embed 100,000 documents", lambda: self.api.Embed(many, timeout=60), g.INVALID_ARGUMENT,
                     ["100000 tokens in 100000 documents", "--max_tokens_per_request=32768"])
        long_text = self.v1.ScoreRequest()
        long_text.documents.add().text = "a" * (1 << 20)
        self.refused("Score 1 MiB text document", lambda: self.api.Score(long_text, timeout=60), g.INVALID_ARGUMENT,
                     ["tokens in 1 documents", "--max_tokens_per_request"])
        tok = self.v1.TokenizeRequest(texts=["b" * (1 << 20)])
        self.refused("Tokenize 1 MiB text", lambda: self.api.Tokenize(tok, timeout=60), g.INVALID_ARGUMENT,
                     ["--max_tokens_per_request"])
        # The server still answers an ordinary request.
        resp = self.kserve.ModelInfer(self.good_request("after-bombs"), timeout=60)
        self.assertEqual(resp.id, "after-bombs")

    # --- 2. bad stream messages between good ones -------------------------------------------------

    def test_2_stream_keeps_serving(self):
        pb = self.pb
        bad_model = self.good_request("s-unknown-model")
        bad_model.model_name = "nope"
        messages = [
            (self.good_request("s0"), None),
            (self.infer_request([("input_ids", "INT64", [1, 1 << 40], None)], [bytes(8)], rid="s-bomb"),
             "INVALID_ARGUMENT"),
            (self.good_request("s1"), None),
            (self.infer_request([("text", "BYTES", [1 << 27], [b"x"])], rid="s-bytes-bomb"), "INVALID_ARGUMENT"),
            (bad_model, "NOT_FOUND"),
            (self.good_request("s2", outputs=("logits",)), None),
        ]
        replies = list(self.kserve.ModelStreamInfer(iter([m for m, _ in messages]), timeout=120))
        self.assertEqual(len(replies), len(messages))
        by_id = {r.infer_response.id: r for r in replies}
        for message, error in messages:
            r = by_id[message.id]
            TABLE.append((f"ModelStreamInfer message {message.id}", error or "OK", 0))
            if error is None:
                self.assertEqual(r.error_message, "", message.id)
                self.assertEqual(len(r.infer_response.raw_output_contents), 1)
            else:
                self.assertTrue(r.error_message.startswith(error), r.error_message)
        # Garbage bytes on the stream: an error response, then the next message is served.
        call = self.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                          request_serializer=None,
                                          response_deserializer=pb.ModelStreamInferResponse.FromString)
        good = self.good_request("after-garbage").SerializeToString()
        replies = list(call(iter([b"\xff\xff\xff\xff", good]), timeout=60))
        self.assertEqual(len(replies), 2)
        self.assertIn("not a valid ModelInferRequest", replies[0].error_message)
        self.assertEqual(replies[1].error_message, "")
        self.assertEqual(replies[1].infer_response.id, "after-garbage")
        TABLE.append(("ModelStreamInfer garbage bytes", "INVALID_ARGUMENT (inline), stream kept serving", 0))

    # --- 3. a stream client that sends and never reads --------------------------------------------

    def metric(self, prefix):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.server.http_port}/metrics", timeout=10).read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))

    def answered_stream_requests(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.server.http_port}/metrics", timeout=10).read().decode()
        total = 0
        for line in text.splitlines():
            if line.startswith("reformer_requests_total{") and 'method="ModelStreamInfer"' in line:
                total += int(float(line.split()[-1]))
        return total

    def test_3_stream_that_never_reads_is_bounded(self):
        pid = self.server.pid
        # Warm both workers on the same work first: the growth measured below is then the stream's
        # buffering, not the engine's working memory (which the memory budget bounds).
        warm = [self.kserve.ModelInfer.future(self.good_request(f"warm-{i}", tokens=1024, outputs=("logits",)),
                                              timeout=120) for i in range(4)]
        for f in warm:
            f.result()
        answered_before = self.answered_stream_requests()
        # Sent responses hold no budget: the output reservations went with them.
        deadline = time.time() + 10
        while self.metric('reformer_memory_reserved_bytes{kind="output"}') > 0 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.metric('reformer_memory_reserved_bytes{kind="output"}'), 0)
        base = proc_status(pid, "VmRSS")
        reset_peak(pid)
        sent = [0]

        def requests():
            for i in range(300):  # 1024 tokens of logits: ~1 MiB per answer
                sent[0] += 1
                yield self.good_request(f"unread-{i}", tokens=1024, outputs=("logits",))
                time.sleep(0.005)

        HostileClientTest.unread_call = self.kserve.ModelStreamInfer(requests(), timeout=600)  # never read
        time.sleep(8)
        growth = proc_status(pid, "VmHWM") - base
        taken = self.answered_stream_requests() - answered_before
        TABLE.append((f"ModelStreamInfer, 300 x 1 MiB answers never read ({sent[0]} sent, {taken} taken)",
                      "reading paused", growth))
        self.assertLess(taken, 300, "the server kept reading a stream whose client reads nothing")
        # The unsent answers keep their outputs reserved in the memory budget until they are sent.
        held = self.metric('reformer_memory_reserved_bytes{kind="output"}')
        print(f"output memory reserved by unsent stream answers: {held / MiB:.1f} MiB")
        self.assertGreater(held, 0)
        # Other clients are still served meanwhile.
        resp = self.kserve.ModelInfer(self.good_request("beside-unread"), timeout=60)
        self.assertEqual(resp.id, "beside-unread")
        self.assertLess(growth, BOMB_GROWTH_LIMIT, f"peak RSS grew by {growth / MiB:.1f} MiB")

    # --- 4. slow HTTP clients beside probes -------------------------------------------------------

    def test_4_slow_http_clients_do_not_block_probes(self):
        HostileClientTest.slow = []
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", self.server.http_port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a request, never finished
            HostileClientTest.slow.append(s)
        time.sleep(0.5)
        for path in ("/readyz", "/metrics", "/healthz"):
            start = time.time()
            with urllib.request.urlopen(f"http://127.0.0.1:{self.server.http_port}{path}", timeout=2.5) as r:
                self.assertEqual(r.status, 200, path)
            TABLE.append((f"GET {path} beside 64 half-sent HTTP requests", "200", 0))
            print(f"{path} answered in {time.time() - start:.3f} s beside 64 slow connections")

    # --- 5. a busy port -------------------------------------------------------------------------

    def test_5_busy_grpc_port_is_an_error(self):
        proc = subprocess.run([SERVER, "--model_dir", MODEL_DIR, "--grpc_port", str(self.server.grpc_port),
                               "--http_port", "0", "--bind_address", "127.0.0.1", "--warmup=false"],
                              capture_output=True, text=True, timeout=120)
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("READY", proc.stderr)
        self.assertIn(str(self.server.grpc_port), proc.stderr)
        TABLE.append(("second server on the same gRPC port", f"exit {proc.returncode}", 0))

    # --- 6. SIGTERM with hostile clients still connected ------------------------------------------

    def test_6_sigterm_exits_within_the_drain_bound(self):
        self.assertIsNotNone(getattr(HostileClientTest, "unread_call", None))
        self.assertEqual(len(getattr(HostileClientTest, "slow", [])), 64)
        start = time.time()
        self.server.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.server.proc.wait(timeout=DRAIN_TIMEOUT_S + 15)
        except subprocess.TimeoutExpired:
            self.server.proc.kill()
            self.fail("reformer-server did not exit within --drain_timeout_s + 15 s after SIGTERM")
        took = time.time() - start
        TABLE.append((f"SIGTERM with the unread stream and 64 slow HTTP clients open ({took:.1f} s)", f"exit {rc}", 0))
        self.assertEqual(rc, 0, self.server.stderr_tail())
        HostileClientTest.unread_call.cancel()
        for s in HostileClientTest.slow:
            s.close()


if __name__ == "__main__":
    if not SERVER or not os.path.exists(SERVER):
        print("usage: hostile_client_test.py SERVER_BINARY SOURCE_DIR", file=sys.stderr)
        sys.exit(2)
    server_harness.run_tests(6)
