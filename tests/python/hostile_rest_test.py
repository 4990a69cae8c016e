#!/usr/bin/python3
"""Hostile REST clients against a real reformer-server (issue 13; the gRPC side is hostile_client_test.py).

Starts reformer-server on port 0 with the bundled model (byte-level tokenizer, so `text` is reachable),
32 HTTP threads (24 of them for inference) and a 2 s body timeout, and sends, over raw sockets:
  1. size bombs and malformed bodies: declared shapes far beyond the data (JSON and binary),
     binary_data_size beyond the body, BYTES counts beyond their bytes, a Content-Length of 1 GiB (with
     and without Expect: 100-continue), a body just over the limit, a chunked body over the limit,
     truncated binary data, Inference-Header-Content-Length beyond the body, a body cut short, deeply
     nested JSON, huge numbers, 100,000 inputs, 500,000 empty strings, 700,000 ids in one row, a body
     that trickles in. Each must get its status and message while the server's peak RSS (VmHWM, reset
     before each case) grows by less than 64 MiB;
  2. a client that disconnects while its request runs: the request is cancelled
     (reformer_requests_total{method="REST.ModelInfer",code="Canceled"});
  3. 40 concurrent slow REST inferences (4 x 2048 tokens each) (more than the 24 inference threads): the extra ones get 503
     with Retry-After at once, and /readyz, /metrics and metadata answer meanwhile (latencies printed);
  4. SIGTERM with REST requests in flight: each gets an answer, the server exits 0.
Prints a table: case, status, peak RSS growth. Nothing here skips.
Usage: hostile_rest_test.py SERVER_BINARY SOURCE_DIR
"""
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import unittest

import server_harness
from server_harness import proc_status, reset_peak

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL_DIR = os.path.join(SOURCE, "models", "default")
MiB = 1 << 20
GROWTH_LIMIT = 64 * MiB
HTTP_THREADS, INFER_THREADS = 32, 24
TABLE = []  # (case, status, growth bytes)


def read_response(sock):
    """Status, lower-case headers and body of one response (server_harness.read_response); a connection
    closed before the head is an OSError here, which the concurrent cases count."""
    r = server_harness.read_response(sock, timeout=60)
    if r is None:
        raise ConnectionError("connection closed before a whole response head")
    return r[:3]


class Server(server_harness.Server):
    def __init__(self):
        super().__init__(SERVER, MODEL_DIR, "--workers", "2", "--threads_per_worker", "1",
                         "--http_threads", str(HTTP_THREADS), "--http_infer_threads", str(INFER_THREADS),
                         "--http_body_timeout_s", "2", "--drain_timeout_s", "20")

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.http_port), timeout=30)

    def get(self, path):
        with self.connect() as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return read_response(s)

    def post(self, body, headers=None, path=None, content_length=None):
        path = path or f"/v2/models/{self.model}/infer"
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body) if content_length is None else content_length}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        with self.connect() as s:
            s.sendall(head.encode() + b"\r\n")
            try:
                s.sendall(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early; the answer is still there to read
            return read_response(s)

    def raw(self, data):
        """Sends `data` as is and reads the one answer."""
        with self.connect() as s:
            s.sendall(data)
            return read_response(s)

    def metric(self, prefix):
        text = self.get("/metrics")[2].decode()
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(prefix))


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def binary_body(header, tail):
    j = compact(header).encode()
    return j + tail, {"Inference-Header-Content-Length": str(len(j)), "Content-Type": "application/octet-stream"}


class HostileRestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        print("\ncase | status | peak RSS growth")
        for case, status, growth in TABLE:
            print(f"{case} | {status} | {growth / MiB:.1f} MiB")

    def refused(self, case, send, status, fragments=()):
        pid = self.server.pid
        base = proc_status(pid, "VmRSS")
        reset_peak(pid)
        got, headers, body = send()
        growth = proc_status(pid, "VmHWM") - base
        TABLE.append((case, got, growth))
        self.assertEqual(got, status, f"{case}: {body[:300]}")
        error = json.loads(body)["error"]
        for f in fragments:
            self.assertIn(f, error, case)
        self.assertLess(growth, GROWTH_LIMIT, f"{case}: peak RSS grew by {growth / MiB:.1f} MiB")
        return headers

    def ids(self, shape, data, dtype="INT64"):
        return compact({"inputs": [{"name": "input_ids", "datatype": dtype, "shape": shape, "data": data}]}).encode()

    # --- 1. bombs and malformed bodies ---------------------------------------------------------

    def test_1_bombs(self):
        s = self.server
        post = lambda body, **kw: (lambda: s.post(body, **kw))
        cases = [
            ("JSON INT64 [1,2^40], 2 values", post(self.ids([1, 1 << 40], [1, 2])), 400,
             ["'data' has 2 elements", "needs 1099511627776"]),
            ("JSON INT64 [2^40,2^40]", post(self.ids([1 << 40, 1 << 40], [1])), 400, ["too many elements"]),
            ("JSON BYTES [2^27], 1 string",
             post(compact({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1 << 27], "data": ["x"]}]}).encode()),
             400, ["needs 134217728"]),
        ]
        body, h = binary_body({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 2],
                                           "parameters": {"binary_data_size": 1 << 40}}]}, bytes(16))
        cases.append(("binary_data_size 2^40, 16 bytes sent", post(body, headers=h), 400, ["add up to 1099511627776"]))
        body, h = binary_body({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 1 << 27],
                                           "parameters": {"binary_data_size": 8}}]}, bytes(8))
        cases.append(("binary INT64 [1,2^27], 8 bytes", post(body, headers=h), 400,
                      ["binary_data_size is 8 bytes", "needs 1073741824"]))
        body, h = binary_body({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1 << 27],
                                           "parameters": {"binary_data_size": 4}}]}, bytes(4))
        cases.append(("binary BYTES [2^27], 4 bytes", post(body, headers=h), 400, ["cannot hold the 134217728"]))
        body, h = binary_body({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [2, 4],
                                           "parameters": {"binary_data_size": 64}}]}, bytes(40))
        cases.append(("truncated binary (40 of 64 bytes)", post(body, headers=h), 400, ["add up to 64 bytes"]))
        body, h = binary_body({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 1],
                                           "parameters": {"binary_data_size": 8}}]}, bytes(8))
        h["Inference-Header-Content-Length"] = str(len(body) + 1000)
        cases.append(("Inference-Header-Content-Length beyond the body", post(body, headers=h), 400,
                      ["is beyond the body"]))
        cases += [
            ("JSON nested 100,000 deep", post(b'{"inputs":[{"name":"input_ids","data":' + b"[" * 100000 + b"]" * 100000 + b"}]}"),
             400, ["deeper than 32 levels"]),
            ("number 1e999", post(self.ids([1, 1], ["1e999"]).replace(b'"1e999"', b"1e999")), 400, ["not valid JSON"]),
            ("integer 10^30", post(self.ids([1, 1], [10 ** 30])), 400, ["not an integer"]),
            ("shape dimension 10^30", post(self.ids([1, 10 ** 30], [1])), 400, ["must be a list of integers"]),
            ("100,000 inputs", post(b'{"inputs":[' + b",".join([b"{}"] * 100000) + b"]}"), 400, ["more than 16 inputs"]),
            ("500,000 empty strings",
             post(compact({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [500000], "data": [""] * 500000}]}).encode()),
             400, ["500000 text rows"]),
            ("700,000 ids in one row", post(self.ids([1, 700000], [1] * 700000)), 400, ["row 0 has 700000 tokens"]),
        ]
        # The request head: an encoded '/' would have routed to .../infer; a repeated JSON length or Host
        # lets a proxy and this server read different requests; a bare-LF head used to wait for the 408.
        ok_ids = self.ids([1, 2], [1, 2])
        cases += [
            ("%2F in the path", post(ok_ids, path=f"/v2/models/{s.model}%2Finfer"), 400, ["encoded '/'"]),
            ("Inference-Header-Content-Length twice",
             lambda: s.raw(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           f"Content-Length: {len(ok_ids)}\r\nInference-Header-Content-Length: {len(ok_ids)}\r\n"
                           "Inference-Header-Content-Length: 2\r\n\r\n".encode() + ok_ids),
             400, ["Inference-Header-Content-Length is given more than once"]),
            ("Host twice", lambda: s.raw(b"GET /v2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400, ["Host"]),
            ("bare LF head", lambda: s.raw(b"GET /v2 HTTP/1.1\nHost: x\n\n"), 400, ["bare LF"]),
        ]
        for case, send, status, fragments in cases:
            self.refused(case, send, status, fragments)

    def test_2_body_limits(self):
        s = self.server
        limit = 16 * 8 * 4096 + MiB  # the default: 16 B x max_tokens_per_request (8 x context) + 1 MiB

        def declared_gib(expect):
            with s.connect() as sock:
                head = f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n"
                head += "Expect: 100-continue\r\n" if expect else ""
                sock.sendall(head.encode() + b"\r\n" + b"{" * 1000)
                return read_response(sock)

        for expect in (False, True):
            headers = self.refused(f"Content-Length 1 GiB{' + Expect: 100-continue' if expect else ''}, 1 KB sent",
                                   lambda: declared_gib(expect), 413, ["above the limit"])
            self.assertEqual(headers.get("connection"), "close")
        self.refused("body 1 byte over the limit, all sent", lambda: s.post(b" " * (limit + 1)), 413,
                     [f"{limit + 1} bytes"])

        def chunked_over():
            with s.connect() as sock:
                sock.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n".encode())
                piece = b" " * 65536
                try:
                    for _ in range(limit // 65536 + 2):
                        sock.sendall(b"10000\r\n" + piece + b"\r\n")
                    sock.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return read_response(sock)

        self.refused("chunked body over the limit", chunked_over, 413, ["above the limit"])

        def cut_short():
            with s.connect() as sock:
                sock.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
                             + b" " * 500)
                sock.shutdown(socket.SHUT_WR)
                return read_response(sock)

        self.refused("body cut short (500 of 1000 bytes, then FIN)", cut_short, 400, ["ended after 500 of 1000"])

        def trickle():
            with s.connect() as sock:
                sock.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
                start = time.time()
                try:
                    while time.time() - start < 10:
                        sock.sendall(b" ")
                        time.sleep(0.2)
                        sock.settimeout(0.01)
                        try:
                            if sock.recv(1, socket.MSG_PEEK):
                                break
                        except (socket.timeout, BlockingIOError):
                            pass
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return read_response(sock)

        self.refused("body trickling in (1 byte / 0.2 s, --http_body_timeout_s 2)", trickle, 408, ["in time"])

    # --- 2. a client that goes away ------------------------------------------------------------

    def test_3_disconnect_cancels(self):
        s = self.server
        canceled = 'reformer_requests_total{code="Canceled",method="REST.ModelInfer",tenant="anonymous"}'
        before = s.metric(canceled)
        # A long request (8 x 4096 tokens of logits, about a second of compute here) that the client
        # abandons right after sending it: the server sees the hang-up while the request waits or runs.
        ids = [[(7 * i + r) % 250 + 1 for i in range(4096)] for r in range(8)]
        body = compact({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [8, 4096], "data": ids}],
                           "outputs": [{"name": "logits"}]}).encode()
        sock = s.connect()
        sock.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        time.sleep(0.1)
        sock.close()
        deadline = time.time() + 30
        while s.metric(canceled) <= before and time.time() < deadline:
            time.sleep(0.05)
        after = s.metric(canceled)
        TABLE.append(("client closes after sending an 8 x 4096-token logits request", "Canceled", 0))
        self.assertEqual(after, before + 1)

        # A client that only half-closes (shutdown(SHUT_WR) after the body; legal HTTP/1.1, `nc -N`) is taken
        # as gone like nginx does, but it still reads an answer: 499 with the reason, not an empty connection.
        sock = s.connect()
        sock.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        sock.shutdown(socket.SHUT_WR)
        status, _, answer = read_response(sock)
        sock.close()
        self.assertEqual(status, 499, answer[:200])
        self.assertIn("disconnected", json.loads(answer)["error"])

    # --- 3. probes beside more slow inferences than inference threads --------------------------

    def test_4_probes_beside_slow_inferences(self):
        s = self.server
        ids = [[(5 * i + r) % 250 + 1 for i in range(2048)] for r in range(4)]
        body = compact({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [4, 2048], "data": ids}],
                           "outputs": [{"name": "embedding"}]}).encode()
        results = []

        def one():
            try:
                results.append(s.post(body)[0])
            except OSError as e:
                results.append(str(e))

        threads = [threading.Thread(target=one) for _ in range(40)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        latencies = {}
        for path in ("/readyz", "/metrics", f"/v2/models/{s.model}", "/healthz"):
            start = time.time()
            status = s.get(path)[0]
            latencies[path] = time.time() - start
            self.assertEqual(status, 200, path)
        for t in threads:
            t.join(timeout=300)
        ok, busy = results.count(200), results.count(503)
        summary = ", ".join(f"{p} {v * 1000:.0f} ms" for p, v in latencies.items())
        print(f"40 concurrent 4 x 2048-token REST inferences: {ok} x 200, {busy} x 503 (slots); probes: {summary}")
        TABLE.append((f"40 slow REST inferences, {INFER_THREADS} inference threads: probes {summary}",
                      f"{ok} x 200, {busy} x 503", 0))
        self.assertEqual(ok + busy, 40, results)
        self.assertGreaterEqual(ok, INFER_THREADS)
        self.assertGreater(busy, 0)
        for path, seconds in latencies.items():
            self.assertLess(seconds, 5, f"{path} took {seconds:.1f} s beside the REST load")

    # --- 4. SIGTERM with REST requests in flight ------------------------------------------------

    def test_5_sigterm_answers_in_flight_requests(self):
        s = self.server
        body = self.ids([1, 1024], [[(3 * i) % 250 + 1 for i in range(1024)]])
        results = []

        def one():
            try:
                results.append(s.post(body)[0])
            except Exception as e:  # noqa: BLE001 - the test reports what went wrong
                results.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        start = time.time()
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        rc = s.proc.wait(timeout=60)
        TABLE.append((f"SIGTERM with 8 REST requests in flight ({time.time() - start:.1f} s)",
                      f"exit {rc}; answers {sorted(results)}", 0))
        self.assertEqual(rc, 0, s.stderr_tail())
        self.assertEqual(len(results), 8, results)
        self.assertTrue(all(r in (200, 503) for r in results), results)


if __name__ == "__main__":
    if not SERVER or not os.path.exists(SERVER):
        print("usage: hostile_rest_test.py SERVER_BINARY SOURCE_DIR", file=sys.stderr)
        sys.exit(2)
    server_harness.run_tests(5)
