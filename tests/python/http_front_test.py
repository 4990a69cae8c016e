#!/usr/bin/python3
"""The HTTP front (server/http/http_front.h) against a real reformer-server, over raw sockets.

1. Probes beside a flood: every handler thread busy on a slow body upload, 1,000 idle connections and
   200 half-sent heads (from several 127.0.0.x source addresses, each under the per-client cap): a fresh
   GET /readyz and GET /metrics each answer within 1 s (ten times each), and the idle connections are
   still open afterwards (they cost no thread).
2. The per-client cap: with every connection from one address mid-request, one more gets 503.
3. Strict parsing (RFC 9112): each malformed request gets its precise status (400, 404 JSON, 405 with
   Allow, 411-free Content-Length handling, 417, 431, 501, 505) and a connection that must close closes.
4. Keep-alive and pipelining: two requests in one write get two answers in order on one connection.
5. A head that never completes gets 408 after --http_request_timeout_s; SIGTERM with 1,000 idle
   connections open exits 0 promptly.
6. Eviction at the connection limits (--http_max_connections_per_client 8, --http_max_connections 16): a
   client holding its cap of idle connections still gets /readyz and /metrics answered within 1 s from the
   same address, the oldest idle connections being the ones closed; connections in the middle of a request
   (half-sent head, slow body) are never evicted, and when all are busy the next one gets 503; at the total
   cap another address gets in by evicting the globally oldest idle one; reformer_http_connections_evicted_total
   counts each eviction by limit.
6b. At the caps, a connection whose complete request waits unread in the kernel is not idle: 30 rounds of
   5 connections at a per-client cap of 4 (and 17 at a total cap of 16), each sending a whole POST infer at
   once, get 200 or 503 each, never a reset or a silent close.
7. Draining: after SIGTERM an idle kept-alive connection and one that never sent a byte are closed at once
   (timeouts 60 s), a body still uploading gets 503 with Connection: close at once, and responses carry
   Connection: close and their connection closes after them.
Bounds are generous (loaded 2-core machine); nothing here skips.
Usage: http_front_test.py SERVER_BINARY SOURCE_DIR
"""
import json
import os
import re
import resource
import signal
import socket
import sys
import time
import unittest

import server_harness
from server_harness import read_response

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL_DIR = os.path.join(SOURCE, "models", "default")
HTTP_THREADS = 8
PER_CLIENT = 300

# This client holds ~1,300 sockets at once: raise the soft descriptor limit (the hard one is the ceiling).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < 8192:
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192 if _hard == resource.RLIM_INFINITY else min(8192, _hard), _hard))


def closed_soon(sock, timeout=10):
    """True when the peer closes (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class Server(server_harness.Server):
    def __init__(self, *extra, per_client=PER_CLIENT):
        super().__init__(SERVER, MODEL_DIR, "--workers", "1", "--threads_per_worker", "1",
                         "--http_threads", str(HTTP_THREADS), "--http_infer_threads", "6",
                         "--http_max_connections_per_client", str(per_client), "--drain_timeout_s", "5", *extra)

    def connect(self, source="127.0.0.1"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(30)
        s.bind((source, 0))
        s.connect(("127.0.0.1", self.http_port))
        return s

    def request(self, raw, source="127.0.0.1"):
        with self.connect(source) as s:
            s.sendall(raw)
            return read_response(s)


class FloodTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--http_request_timeout_s", "60", "--http_keep_alive_timeout_s", "60",
                            "--http_body_timeout_s", "60")

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()

    def timed_get(self, path):
        start = time.monotonic()
        r = self.server.request(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return r, time.monotonic() - start

    def test_probes_answer_beside_uploads_idle_and_half_sent(self):
        s = self.server
        uploads = []
        for i in range(HTTP_THREADS):  # every handler thread waits for a body that trickles
            u = s.connect("127.0.0.10")
            u.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Length: 100000\r\n\r\n{{".encode())
            uploads.append(u)
        idle = [s.connect(f"127.0.0.{2 + i // 250}") for i in range(1000)]
        half = []
        for i in range(200):
            h = s.connect("127.0.0.7")
            h.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            half.append(h)
        time.sleep(1.0)  # the uploads reach their handlers
        worst = 0.0
        for _ in range(10):
            for path in ("/readyz", "/metrics"):
                r, took = self.timed_get(path)
                self.assertIsNotNone(r, path)
                self.assertEqual(r[0], 200, path)
                worst = max(worst, took)
                self.assertLess(took, 1.0, f"{path} took {took:.3f} s beside the flood")
        print(f"probes beside {HTTP_THREADS} uploads, 1000 idle, 200 half-sent: worst {worst * 1000:.1f} ms",
              file=sys.stderr)
        # The idle connections are still open: one of them still serves a request.
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(idle[0])[0], 200)
        # The uploads still get their answer (a bad body, 400) once they end.
        uploads[0].sendall(b" " * 99999)
        self.assertEqual(read_response(uploads[0])[0], 400)
        for sock in uploads + idle + half:
            sock.close()

    def test_per_client_cap(self):
        s = self.server
        held = [s.connect("127.0.0.20") for _ in range(PER_CLIENT)]
        held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_response(held[-1])[0], 200)  # all PER_CLIENT accepted and served
        for h in held:  # every one mid-request (half a head): none can be evicted (EvictionTest)
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        extra = s.connect("127.0.0.20")
        r = read_response(extra)
        self.assertIsNotNone(r)
        self.assertEqual(r[0], 503)
        self.assertIn("per_client", json.loads(r[2])["error"])
        extra.close()
        # Another address is not affected.
        self.assertEqual(s.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.21")[0], 200)
        for sock in held:
            sock.close()


class StrictParsingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--http_body_timeout_s", "5")

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()

    def expect(self, raw, status, closes, fragment=None, allow=None):
        with self.server.connect() as s:
            s.sendall(raw)
            r = read_response(s)
            self.assertIsNotNone(r, raw)
            self.assertEqual(r[0], status, (raw, r))
            if status >= 400:
                self.assertEqual(r[1].get("content-type"), "application/json", raw)
                error = json.loads(r[2])["error"]
                if fragment:
                    self.assertIn(fragment, error, raw)
            if allow:
                self.assertEqual(r[1].get("allow"), allow)
            if closes:
                self.assertEqual(r[1].get("connection"), "close", raw)
                self.assertTrue(closed_soon(s), raw)

    def test_statuses(self):
        infer = f"/v2/models/{self.server.model}/infer"
        cases = [
            (f"POST {infer} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             400, True, "both Content-Length and Transfer-Encoding"),
            (f"POST {infer} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, True, "Content-Length"),
            (f"POST {infer} HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, True, "Content-Length"),
            (f"POST {infer} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, True,
             "conflicting"),
            (f"POST {infer} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400,
             True, "chunk size"),
            (f"POST {infer} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, True, "gzip"),
            ("GET /readyz HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n", 417, True, "Expect"),
            ("GET /readyz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, True, "control"),
            ("GET /readyz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, True, "control"),
            ("GET /v2/models/a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400, True, "control"),
            ("GET /v2/models/a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, True, "percent"),
            ("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501, True, "FOO"),
            ("GET /readyz HTTP/2.0\r\nHost: x\r\n\r\n", 505, True, "HTTP/2.0"),
            ("GET /readyz HTTP/1.1\r\n\r\n", 400, True, "Host"),
            ("GET readyz HTTP/1.1\r\nHost: x\r\n\r\n", 400, True, "origin-form"),
            ("GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 20000 + "\r\n\r\n", 431, True, "head"),
            ("GET /readyz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, True, "header"),
            ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, False, "no such endpoint"),
            ("POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404, False, "no such endpoint"),
            (f"GET /v2/models/{self.server.model}/nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, False, "no such"),
            ("GET /v2/models/other HTTP/1.1\r\nHost: x\r\n\r\n", 404, False, None),
        ]
        for raw, status, closes, fragment in cases:
            with self.subTest(raw=raw[:60]):
                self.expect(raw.encode("latin-1"), status, closes, fragment)
        with self.subTest("POST to a GET-only path"):
            self.expect(b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405, False,
                        "GET, HEAD", allow="GET, HEAD")
        with self.subTest("GET to a POST-only path"):
            self.expect(f"GET {infer} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 405, False, allow="POST")

    def test_absolute_form_and_pipelining(self):
        r = self.server.request(b"GET http://localhost/readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(r[0], 200)
        with self.server.connect() as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            first = read_response(s)
            self.assertEqual(first[0], 200)
            self.assertEqual(first[2], b"ok\n")
            rest = first[3]
            s.settimeout(10)
            while rest.count(b"HTTP/1.1 ") < 2 or not rest.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            self.assertIn(b"HTTP/1.1 404 ", rest)
            self.assertIn(b"HTTP/1.1 200 ", rest[rest.index(b"HTTP/1.1 404 ") + 1:])
            self.assertTrue(closed_soon(s))

    def test_chunked_body_reaches_the_handler(self):
        body = json.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 3],
                                       "data": [1, 2, 3]}], "outputs": [{"name": "embedding"}]}).encode()
        raw = (f"POST /v2/models/{self.server.model}/infer HTTP/1.1\r\nHost: x\r\n"
               f"Transfer-Encoding: chunked\r\n\r\n").encode()
        raw += b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x;ext=1\r\n%s\r\n" % (len(body) - 10, body[10:]) + b"0\r\n\r\n"
        with self.server.connect() as s:
            s.sendall(raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            r = read_response(s, timeout=60)
            self.assertEqual(r[0], 200, r)
            self.assertIn("embedding", json.loads(r[2])["outputs"][0]["name"])
            rest = r[3]
            while b"ok\n" not in rest:
                rest += s.recv(65536)
            self.assertIn(b"HTTP/1.1 200 ", rest)  # the kept-alive connection serves the next request


class TimeoutAndTermTest(unittest.TestCase):
    def test_head_timeout_and_sigterm_with_idle_connections(self):
        server = Server("--http_request_timeout_s", "1", "--http_keep_alive_timeout_s", "60")
        try:
            slow = server.connect()
            slow.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
            r = read_response(slow, timeout=15)
            self.assertIsNotNone(r)
            self.assertEqual(r[0], 408)
            slow.close()
            # Fresh connections that send nothing are dropped after the same time; kept-alive ones
            # (they sent a request) wait for --http_keep_alive_timeout_s.
            idle = []
            for i in range(1000):
                c = server.connect(f"127.0.0.{30 + i // 250}")
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                idle.append(c)
            for c in idle:
                self.assertEqual(read_response(c)[0], 200)
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=30)
            took = time.monotonic() - start
            self.assertEqual(rc, 0)
            print(f"SIGTERM with 1000 kept-alive idle connections: exit 0 after {took:.2f} s", file=sys.stderr)
            self.assertLess(took, 20)
            self.assertTrue(all(closed_soon(c, 5) for c in idle[:50]))
            for c in idle:
                c.close()
        finally:
            server.kill()


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
EVICTED = re.compile(r'^reformer_http_connections_evicted_total\{limit="(\w+)"\} (\S+)$', re.M)
LONG_TIMEOUTS = ("--http_request_timeout_s", "60", "--http_keep_alive_timeout_s", "60", "--http_body_timeout_s", "60")


def evictions(server, source="127.0.0.99"):
    """reformer_http_connections_evicted_total by limit."""
    r = server.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", source)
    found = {k: float(v) for k, v in EVICTED.findall(r[2].decode())}
    assert set(found) == {"per_client", "total"}, found
    return found


def kept_alive(server, source):
    """A connection that has been answered once and now idles, kept alive.

    The server's handler thread hands the connection back to the event loop just after the response
    is sent, so the client can read it first; the pause lets that hand-back happen before the caller
    opens its next connection, so that connections become idle in the order they were made (the
    eviction tests rely on that order; without the pause a loaded machine reordered them)."""
    c = server.connect(source)
    c.sendall(GET_HEALTHZ)
    r = read_response(c)
    assert r is not None and r[0] == 200 and r[1].get("connection") != "close", r
    time.sleep(0.05)
    return c


def timed_request(server, path, source):
    """Status and seconds of one GET on a new connection, which is left open (kept alive)."""
    start = time.monotonic()
    c = server.connect(source)
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    r = read_response(c)
    return (r[0] if r else None), time.monotonic() - start, c


def still_open(sock):
    return not closed_soon(sock, 0.3)


class EvictionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(*LONG_TIMEOUTS, per_client=8)

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()

    def test_idle_connections_make_room_for_probes_from_the_same_address(self):
        s, src = self.server, "127.0.0.40"
        before = evictions(s)
        # The cap of idle connections, oldest first: four kept alive after a request, four that sent nothing.
        held = [kept_alive(s, src) for _ in range(4)] + [s.connect(src) for _ in range(4)]
        probes = []
        for path in ("/readyz", "/metrics"):
            status, took, c = timed_request(s, path, src)
            probes.append(c)
            self.assertEqual(status, 200, path)
            self.assertLess(took, 1.0, f"{path} took {took:.3f} s")
        # Each probe evicted the oldest idle connection, no other.
        self.assertTrue(closed_soon(held[0], 5))
        self.assertTrue(closed_soon(held[1], 5))
        self.assertTrue(all(still_open(c) for c in held[2:]))
        for c in (held[2], held[7]):  # a kept-alive and a fresh survivor still serve
            c.sendall(GET_HEALTHZ)
            self.assertEqual(read_response(c)[0], 200)
        after = evictions(s)
        self.assertEqual(after["per_client"] - before["per_client"], 2)
        self.assertEqual(after["total"], before["total"])
        for c in held + probes:
            c.close()

    def test_connections_mid_request_are_never_evicted(self):
        s, src = self.server, "127.0.0.41"
        idle = kept_alive(s, src)
        half = []
        for _ in range(4):
            h = s.connect(src)
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            half.append(h)
        uploads = []
        for _ in range(3):
            u = s.connect(src)
            u.sendall(f"POST /v2/models/{s.model}/infer HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Length: 100000\r\n\r\n{{".encode())
            uploads.append(u)
        time.sleep(0.5)  # the loop has read every partial head and body start
        before = evictions(s)
        status, took, probe = timed_request(s, "/readyz", src)
        self.assertEqual(status, 200)
        self.assertLess(took, 1.0)
        self.assertTrue(closed_soon(idle, 5))  # the one idle connection made room
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # now every connection is mid-request
        time.sleep(0.3)
        extra = s.connect(src)
        r = read_response(extra)
        self.assertIsNotNone(r)
        self.assertEqual(r[0], 503)
        self.assertIn("per_client", json.loads(r[2])["error"])
        extra.close()
        # Nothing mid-request was closed: each head completes and is answered, the body too.
        for h in half + [probe]:
            h.sendall(b"1\r\n\r\n" if h is not probe else b"\r\n")
            self.assertEqual(read_response(h)[0], 200)
        uploads[0].sendall(b" " * 99999)
        self.assertEqual(read_response(uploads[0])[0], 400)
        after = evictions(s)
        self.assertEqual(after["per_client"] - before["per_client"], 1)
        for c in half + uploads + [probe]:
            c.close()


class SentRequestsAtTheCapTest(unittest.TestCase):
    """A connection whose request already waits in the kernel (the loop has not read it yet) is not idle:
    at the per-client and the total cap the new connection evicts a truly idle one or gets 503, and no fully
    sent request is reset (QA: 50 of 240 were, /tmp/qa7/p8.py)."""

    def test_every_fully_sent_request_is_answered(self):
        server = Server(*LONG_TIMEOUTS, "--http_max_connections", "16", per_client=4)
        body = json.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 3],
                                       "data": [1, 2, 3]}], "outputs": [{"name": "embedding"}]}).encode()
        raw = (f"POST /v2/models/{server.model}/infer HTTP/1.1\r\nHost: x\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            outcomes, messages = {}, set()
            for round_ in range(30):
                # Round 0-19: five at the per-client cap of 4; then 17 from 5 addresses at the total cap of 16.
                sources = ["127.0.0.70"] * 5 if round_ < 20 else [f"127.0.0.{71 + i % 5}" for i in range(17)]
                socks = []
                for src in sources:
                    c = server.connect(src)
                    c.sendall(raw)
                    socks.append(c)
                for i, c in enumerate(socks):
                    try:
                        r = read_response(c, timeout=30)
                        outcome = "EOF" if r is None else r[0]
                        if outcome == 503:
                            messages.add(json.loads(r[2])["error"][:60])
                    except ConnectionResetError:
                        outcome = "RST"
                    key = ("beyond" if i == len(socks) - 1 else "within", outcome)
                    outcomes[key] = outcomes.get(key, 0) + 1
                    # Answered: 200, or 503 (the connection beyond the cap when none is idle, or no compute
                    # slot free); never a reset or a silent close.
                    self.assertIn(outcome, (200, 503), (round_, i, outcomes))
                for c in socks:
                    c.close()
                time.sleep(0.05)
            print(f"fully sent requests at the caps: {outcomes}; 503 messages: {sorted(messages)}",
                  file=sys.stderr)
        finally:
            server.kill()


class TotalCapEvictionTest(unittest.TestCase):
    def test_another_address_gets_in_by_evicting_the_oldest_idle_connection(self):
        server = Server(*LONG_TIMEOUTS, "--http_max_connections", "16", per_client=8)
        try:
            before = evictions(server)
            time.sleep(0.3)  # the server has seen the readiness and metrics connections close
            a = [kept_alive(server, "127.0.0.50") for _ in range(8)]
            b = [kept_alive(server, "127.0.0.51") for _ in range(8)]
            status, took, probe = timed_request(server, "/readyz", "127.0.0.52")
            self.assertEqual(status, 200)
            self.assertLess(took, 1.0)
            self.assertTrue(closed_soon(a[0], 5))  # the globally oldest idle connection
            self.assertTrue(all(still_open(c) for c in a[1:] + b))
            after = evictions(server)  # this connection evicts the next oldest, a[1]
            self.assertTrue(closed_soon(a[1], 5))
            self.assertEqual(after["total"] - before["total"], 2)
            self.assertEqual(after["per_client"], before["per_client"])
            for c in a + b + [probe]:
                c.close()
        finally:
            server.kill()


class DrainTest(unittest.TestCase):
    def test_drain_closes_idle_connections_and_says_connection_close(self):
        server = Server(*LONG_TIMEOUTS, "--drain_min_s", "5")
        try:
            idle = kept_alive(server, "127.0.0.60")
            silent = server.connect("127.0.0.63")  # open, not a byte sent
            in_flight = server.connect("127.0.0.61")
            in_flight.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            upload = server.connect("127.0.0.64")  # a body still arriving at SIGTERM
            upload.sendall(f"POST /v2/models/{server.model}/infer HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Length: 100000\r\n\r\n{{".encode())
            time.sleep(0.5)
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            self.assertTrue(closed_soon(idle, 2), "an idle kept-alive connection stayed open while draining")
            closed = time.monotonic() - start
            # A connection that has sent nothing yet stays open (its request may be on its way) and is
            # served, with Connection: close.
            silent.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            r = read_response(silent, timeout=3)
            self.assertIsNotNone(r, "a connection opened before SIGTERM was closed before its request")
            self.assertEqual((r[0], r[1].get("connection")), (503, "close"))
            self.assertTrue(closed_soon(silent, 5))
            # The upload is answered at once (the drain lasts --drain_min_s 5 s): 503, Connection: close.
            r = read_response(upload, timeout=3)
            self.assertIsNotNone(r, "an upload in progress got no answer at SIGTERM")
            self.assertEqual(r[0], 503, r)
            self.assertIn("shutting down", json.loads(r[2])["error"])
            self.assertEqual(r[1].get("connection"), "close")
            print(f"drain: idle connections closed after {closed:.3f} s, the upload answered 503 "
                  f"after {time.monotonic() - start:.3f} s", file=sys.stderr)
            upload.close()
            in_flight.sendall(b"\r\n")  # a request begun before SIGTERM is answered, then closed
            r = read_response(in_flight)
            self.assertEqual(r[0], 200)
            self.assertEqual(r[1].get("connection"), "close")
            self.assertTrue(closed_soon(in_flight, 5))
            for path, status in (("/healthz", 200), ("/readyz", 503)):  # new connections too
                with server.connect("127.0.0.62") as c:
                    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    r = read_response(c)
                    self.assertEqual(r[0], status, path)
                    self.assertEqual(r[1].get("connection"), "close", path)
                    self.assertTrue(closed_soon(c, 5), path)
            self.assertEqual(server.proc.wait(timeout=30), 0)
        finally:
            server.kill()


if __name__ == "__main__":
    server_harness.run_tests(11)
