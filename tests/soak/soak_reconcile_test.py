#!/usr/bin/python3
"""The soak tool's reconciliation (tools/soak/soak_reconcile.py) and wire helpers, on made-up
counters: it must accept exact agreement and the given-up calls' bounded unknowns, and reject every
kind of disagreement (lost, duplicated, unexplained or wrongly coded answers).
Usage: soak_reconcile_test.py SOURCE_DIR
"""
import os
import sys
import unittest

SOURCE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REFORMER_SOURCE_DIR", ".")
sys.path.insert(0, os.path.join(SOURCE, "tools", "soak"))

import soak_h2  # noqa: E402
import soak_reconcile as rec  # noqa: E402

KS, V1 = "inference.GRPCInferenceService", "reformer.v1.ReformerService"
MI = (KS, "ModelInfer")


def exposition(handled=(), started=(), requests=(), inflight=0):
    """Prometheus text with the given (service, method, code, n) / (service, method, n) /
    (method, code, n) samples."""
    lines = ["# HELP grpc_server_handled_total x", "# TYPE grpc_server_handled_total counter"]
    for svc, m, code, n in handled:
        lines.append(f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="{m}",grpc_service="{svc}",'
                     f'grpc_type="unary"}} {n}')
    for svc, m, n in started:
        lines.append(f'grpc_server_started_total{{grpc_method="{m}",grpc_service="{svc}",grpc_type="unary"}} {n}')
    for m, code, n in requests:
        lines.append(f'reformer_requests_total{{code="{code}",method="{m}"}} {n}')
    lines.append(f"reformer_inflight_requests {inflight}")
    return rec.parse_prometheus("\n".join(lines) + "\n")


def unary_counts(codes, started=None, requests=None):
    """ServerCounts for ModelInfer alone: codes {code: n}, started defaults to their sum."""
    after = exposition(handled=[(KS, "ModelInfer", c, n) for c, n in codes.items()],
                       started=[(KS, "ModelInfer", sum(codes.values()) if started is None else started)],
                       requests=[("ModelInfer", c, n) for c, n in (requests or codes).items()])
    return rec.ServerCounts({}, after)


def tally(det=None, gave_up=()):
    t = rec.Tally()
    for code, n in (det or {}).items():
        for _ in range(n):
            t.add_det("rpc", MI, code)
    for allowed, n in gave_up:
        for _ in range(n):
            t.add_gave_up("rpc", MI, allowed)
    return t


class ParseTest(unittest.TestCase):
    def test_labels_values_and_escapes(self):
        p = rec.parse_prometheus('a_total{x="1",y="q\\"uote"} 3\n# c\nb 2.5\nc{} 1e3\n')
        self.assertEqual(p[("a_total", frozenset({("x", "1"), ("y", 'q"uote')}))], 3)
        self.assertEqual(p[("b", frozenset())], 2.5)
        self.assertEqual(p[("c", frozenset())], 1000)

    def test_deltas_between_scrapes(self):
        before = exposition(handled=[(KS, "ModelInfer", "OK", 5)], started=[(KS, "ModelInfer", 5)])
        after = exposition(handled=[(KS, "ModelInfer", "OK", 7), (KS, "ModelInfer", "Canceled", 1)],
                           started=[(KS, "ModelInfer", 8)])
        c = rec.ServerCounts(before, after)
        self.assertEqual(dict(c.handled[MI]), {"OK": 2, "Canceled": 1})
        self.assertEqual(c.started[MI], 3)


class ReconcileTest(unittest.TestCase):
    def violations(self, t, counts, open_streams=0):
        return rec.reconcile(t, counts, open_streams)[1]

    def test_exact_agreement(self):
        self.assertEqual(self.violations(tally({"OK": 3, "InvalidArgument": 2}),
                                         unary_counts({"OK": 3, "InvalidArgument": 2})), [])

    def test_lost_request_never_finished(self):
        v = self.violations(tally({"OK": 3}), unary_counts({"OK": 3}, started=4))
        self.assertTrue(any("never finished" in x for x in v), v)

    def test_handled_twice(self):
        v = self.violations(tally({"OK": 3}), unary_counts({"OK": 4}, started=3))
        self.assertTrue(v)

    def test_unexplained_server_code(self):
        v = self.violations(tally({"OK": 3}), unary_counts({"OK": 3, "Internal": 1}))
        self.assertTrue(any("Internal" in x for x in v), v)

    def test_client_saw_a_code_the_server_did_not_count(self):
        v = self.violations(tally({"OK": 3, "Unimplemented": 1}), unary_counts({"OK": 3}, started=4))
        self.assertTrue(any("fewer Unimplemented" in x for x in v), v)

    def test_given_up_calls_explain_bounded_excess(self):
        t = tally({"OK": 3}, gave_up=[({"OK", "Canceled"}, 3)])
        self.assertEqual(self.violations(t, unary_counts({"OK": 4, "Canceled": 2})), [])
        self.assertEqual(self.violations(t, unary_counts({"OK": 3})), [])  # none reached the server
        self.assertTrue(self.violations(t, unary_counts({"OK": 5, "Canceled": 2})))  # 4 > 3 given up

    def test_halls_condition_per_code(self):
        t = tally({}, gave_up=[({"OK", "Canceled"}, 1), ({"DeadlineExceeded"}, 1)])
        self.assertEqual(self.violations(t, unary_counts({"Canceled": 1, "DeadlineExceeded": 1})), [])
        self.assertTrue(self.violations(t, unary_counts({"Canceled": 2})))
        self.assertTrue(self.violations(t, unary_counts({"InvalidArgument": 1})))

    def test_requests_total_must_match_handled_for_unary(self):
        v = self.violations(tally({"OK": 2}), unary_counts({"OK": 2}, requests={"OK": 1}))
        self.assertTrue(any("reformer_requests_total" in x for x in v), v)

    def test_uncounted_calls_are_not_compared(self):
        t = tally({"OK": 1})
        t.add_uncounted("rpc", (KS, "NoSuchMethod"))
        self.assertEqual(self.violations(t, unary_counts({"OK": 1})), [])

    def test_streams_left_open(self):
        after = exposition(handled=[(KS, "ModelStreamInfer", "OK", 1)], started=[(KS, "ModelStreamInfer", 3)])
        t = rec.Tally()
        t.add_det("rpc", (KS, "ModelStreamInfer"), "OK")
        for _ in range(2):
            t.add_gave_up("rpc", (KS, "ModelStreamInfer"), {"OK", "Canceled"})
        self.assertEqual(self.violations(t, rec.ServerCounts({}, after), open_streams=2), [])
        self.assertTrue(self.violations(t, rec.ServerCounts({}, after), open_streams=1))

    def test_stream_messages_against_requests_total(self):
        after = exposition(requests=[("ModelStreamInfer", "OK", 2), ("ModelStreamInfer", "InvalidArgument", 1)])
        t = rec.Tally()
        t.add_det("msg", rec.STREAM_METHOD, "OK")
        t.add_det("msg", rec.STREAM_METHOD, "InvalidArgument")
        self.assertTrue(self.violations(t, rec.ServerCounts({}, after)))
        t.add_gave_up("msg", rec.STREAM_METHOD, {"OK", "Canceled"})
        self.assertEqual(self.violations(t, rec.ServerCounts({}, after)), [])

    def test_rest_requests_against_requests_total(self):
        # REST inferences have no gRPC counters: each HTTP request is one reformer_requests_total count.
        rest = "REST.ModelInfer"
        after = exposition(requests=[(rest, "OK", 3), (rest, "InvalidArgument", 1), (rest, "Canceled", 1)])
        t = rec.Tally()
        for code in ("OK", "OK", "OK", "InvalidArgument"):
            t.add_det("req", rest, code)
        self.assertTrue(self.violations(t, rec.ServerCounts({}, after)))  # a Canceled nobody explains
        t.add_gave_up("req", rest, {"OK", "Canceled"})  # a client that left before the answer
        self.assertEqual(self.violations(t, rec.ServerCounts({}, after)), [])
        t.add_det("req", rest, "OK")  # an answer the server never counted
        self.assertTrue(self.violations(t, rec.ServerCounts({}, after)))

    def test_generate_requests_total_must_match_handled(self):
        gen = (V1, "Generate")
        handled = [(V1, "Generate", "OK", 2)]
        t = rec.Tally()
        t.add_det("rpc", gen, "OK")
        t.add_det("rpc", gen, "OK")
        ok = exposition(handled=handled, started=[(V1, "Generate", 2)], requests=[("Generate", "OK", 2)])
        self.assertEqual(self.violations(t, rec.ServerCounts({}, ok)), [])
        once = exposition(handled=handled, started=[(V1, "Generate", 2)], requests=[("Generate", "OK", 1)])
        self.assertTrue(any("Generate" in v for v in self.violations(t, rec.ServerCounts({}, once))))

    def test_table_renders(self):
        rows, _ = rec.reconcile(tally({"OK": 1}), unary_counts({"OK": 1}))
        self.assertIn("rpc ModelInfer", rec.format_rows(rows))


class WireTest(unittest.TestCase):
    def test_hpack_integers(self):  # RFC 7541 C.1.1-C.1.3
        self.assertEqual(soak_h2.hpack_int(10, 5), bytes([10]))
        self.assertEqual(soak_h2.hpack_int(1337, 5), bytes([31, 154, 10]))
        self.assertEqual(soak_h2.hpack_int(42, 8), bytes([42]))

    def test_frame_header(self):
        f = soak_h2.frame(soak_h2.HEADERS, soak_h2.END_HEADERS, 3, b"abc")
        self.assertEqual(f[:9], bytes([0, 0, 3, 1, 4, 0, 0, 0, 3]))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
