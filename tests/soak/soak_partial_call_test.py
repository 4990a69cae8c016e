#!/usr/bin/python3
"""A ModelInfer call whose request message never (fully) arrives, sent with the soak's raw HTTP/2
client (tools/soak/soak_h2.py) to a real reformer-server: the client sends the call's HEADERS, then
(a) resets the TCP connection, (b) sends half the message and resets, (c) sends RST_STREAM CANCEL,
(d) half-closes without a message. In each the client ended the call before its request arrived:
the server must count it CANCELLED, exactly once (found by the soak: such calls were counted
INVALID_ARGUMENT "the message (0 bytes) is not a valid ModelInferRequest"), and keep serving.
Usage: soak_partial_call_test.py SERVER_BINARY SOURCE_DIR
"""
import asyncio
import os
import sys
import unittest

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
sys.path.insert(0, os.path.join(SOURCE, "tools", "soak"))

import numpy as np  # noqa: E402
import soak_h2 as h2  # noqa: E402
import soak_phases as ph  # noqa: E402
import soak_proc  # noqa: E402
import soak_reconcile as rec  # noqa: E402
import soak_wire  # noqa: E402

MI = (rec.KSERVE, "ModelInfer")
PATH = f"/{rec.KSERVE}/ModelInfer"


async def partial_call(port, body, mode):
    c = h2.RudeConnection("127.0.0.1", port)
    await c.open()
    sid = 1
    flags = h2.END_HEADERS | (h2.END_STREAM if mode == "half_close" else 0)
    c.writer.write(h2.frame(h2.HEADERS, flags, sid, h2.header_block(f"127.0.0.1:{port}", PATH)))
    if mode == "half_message":
        c.writer.write(h2.frame(h2.DATA, 0, sid, body[:len(body) // 2]))
    elif mode == "rst_stream":
        c.writer.write(h2.frame(h2.RST_STREAM, 0, sid, (8).to_bytes(4, "big")))  # CANCEL
    await c.writer.drain()
    await asyncio.sleep(0.3)
    c.reset()


class PartialCallTest(unittest.TestCase):
    def test_calls_without_their_message(self):
        stubs = soak_wire.load_stubs(os.path.join(SOURCE, "proto"))
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"soak-partial-{os.getpid()}.log")
        server = soak_proc.ServerProcess.spawn(SERVER, os.path.join(SOURCE, "models", "default"),
                                               ["--drain_timeout_s", "5"], log)
        try:
            asyncio.run(self.run_cases(server, stubs))
            server.sigterm()
            self.assertEqual(server.wait_exit(30), 0)
        finally:
            server.kill()

    async def run_cases(self, server, stubs):
        await ph.wait_ready(server, stubs)
        http = (server.host, server.http_port)
        req = stubs.pb.ModelInferRequest(model_name="default", id="p")
        req.inputs.add(name="input_ids", datatype="INT32", shape=[1, 4096])
        req.raw_input_contents.append(np.ones(4096, dtype="<i4").tobytes())
        body = h2.grpc_message(req.SerializeToString())
        expected = {"reset": "Canceled", "half_message": "Canceled", "rst_stream": "Canceled",
                    "half_close": "Canceled"}
        for mode, code in expected.items():
            before = await ph.scrape(http)
            await partial_call(server.grpc_port, body, mode)
            after, quiet = await ph.quiesce(http, timeout=30)
            self.assertTrue(quiet, f"{mode}: server not quiescent: {ph.imbalance(after)}")
            counts = rec.ServerCounts(before, after)
            with self.subTest(mode=mode):
                self.assertEqual(dict(counts.handled.get(MI, {})), {code: 1})
                self.assertEqual(counts.started[MI], 1)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
