#!/usr/bin/python3
"""REST (JSON and binary) against gRPC ModelInfer on the real engine, bit for bit (issue 13).

A REST client written from the Open Inference Protocol specification alone (RestClient below: the
standard library's http.client, json and struct; numpy only to hold the numbers) sends the same
documents as a gRPC client (Debian's python3-grpcio, stubs from proto/) to one reformer-server:
  * every fixture model (tests/fixtures/f*): the fixture's [B,T] ids with its attention mask, all
    outputs; REST with JSON data (nested), JSON data (flat) + binary outputs, binary inputs + JSON
    outputs, binary inputs + binary outputs;
  * the bundled model (models/default, byte-level tokenizer): text as JSON strings and as binary BYTES.
Every output's shape, datatype and every value's bits must equal gRPC's; JSON numbers are read as
a client would (json.loads -> float64 -> float32). Nothing here skips: a missing tool fails.
Usage: rest_client_test.py SERVER_BINARY SOURCE_DIR
"""
import http.client
import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

import server_harness

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
NUMPY = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "|b1"}


class RestClient:
    """POST /v2/models/{name}[/versions/{v}]/infer as the specification describes it.

    inputs: [(name, datatype, shape, values)] with values a numpy array (numbers) or a list of str
    (BYTES). JSON tensors carry `data` (nested row-major lists); binary ones carry
    parameters.binary_data_size and follow the JSON, whose length is the
    Inference-Header-Content-Length header. Returns (response JSON, {output name: numpy array}).
    """

    def __init__(self, port):
        self.port = port

    @staticmethod
    def _tensor_bytes(datatype, values):
        if datatype == "BYTES":
            return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in values)
        return np.asarray(values).astype(NUMPY[datatype]).tobytes()

    def infer(self, model, inputs, outputs=None, binary_inputs=False, binary_outputs=False, request_id=None):
        body = {"inputs": []}
        if request_id is not None:
            body["id"] = request_id
        tail = b""
        for name, datatype, shape, values in inputs:
            tensor = {"name": name, "datatype": datatype, "shape": list(shape)}
            if binary_inputs:
                data = self._tensor_bytes(datatype, values)
                tensor["parameters"] = {"binary_data_size": len(data)}
                tail += data
            else:
                tensor["data"] = values if datatype == "BYTES" else np.asarray(values).tolist()
            body["inputs"].append(tensor)
        if outputs is not None:
            body["outputs"] = [{"name": o} for o in outputs]
        if binary_outputs:
            body["parameters"] = {"binary_data_output": True}
        header = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if binary_inputs:
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(len(header))}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        conn.request("POST", f"/v2/models/{model}/infer", body=header + tail, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        json_length = int(resp.getheader("Inference-Header-Content-Length", len(raw)))
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {raw[:500]}")
        doc = json.loads(raw[:json_length])
        out, at = {}, json_length
        for o in doc["outputs"]:
            dtype = NUMPY[o["datatype"]]
            if "data" in o:
                values = np.array(o["data"], dtype=np.float64 if o["datatype"] == "FP32" else np.int64).astype(dtype)
            else:
                n = o["parameters"]["binary_data_size"]
                values = np.frombuffer(raw[at:at + n], dtype=dtype)
                at += n
            out[o["name"]] = values.reshape(o["shape"])
        if at != len(raw):
            raise RuntimeError(f"{len(raw) - at} bytes after the binary outputs")
        return doc, out


def start_server(model_dir):
    return server_harness.Server(SERVER, model_dir, "--workers", "2", "--threads_per_worker", "1")


class RestVersusGrpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        server_harness.generate_stubs(SOURCE, cls.tmp.name, "grpc_service.proto")
        cls.compared = 0

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        print(f"\n{cls.compared} REST answers compared bit for bit with gRPC")

    def grpc_infer(self, port, model, inputs, outputs=None):
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        req = pb.ModelInferRequest(model_name=model)
        for name, datatype, shape, values in inputs:
            req.inputs.add(name=name, datatype=datatype, shape=list(shape))
            req.raw_input_contents.append(RestClient._tensor_bytes(datatype, values))
        for o in outputs or []:
            req.outputs.add(name=o)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 1 << 30)]) as ch:
            resp = pbg.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=300)
        return {t.name: np.frombuffer(raw, dtype=NUMPY[t.datatype]).reshape(list(t.shape))
                for t, raw in zip(resp.outputs, resp.raw_output_contents)}

    def compare(self, server, inputs, outputs=None, label=""):
        want = self.grpc_infer(server.grpc_port, server.model, inputs, outputs)
        client = RestClient(server.http_port)
        for binary_inputs in (False, True):
            for binary_outputs in (False, True):
                what = f"{label}: {'binary' if binary_inputs else 'JSON'} inputs, " \
                       f"{'binary' if binary_outputs else 'JSON'} outputs"
                doc, got = client.infer(server.model, inputs, outputs, binary_inputs, binary_outputs,
                                        request_id=what)
                self.assertEqual(doc["id"], what)
                self.assertEqual(list(got), list(want), what)
                for name, w in want.items():
                    g = got[name]
                    self.assertEqual(g.shape, w.shape, f"{what}: {name} shape")
                    self.assertEqual(g.dtype, w.dtype, f"{what}: {name} datatype")
                    self.assertTrue(g.tobytes() == w.tobytes(),
                                    f"{what}: {name} differs from gRPC (max |diff| "
                                    f"{np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))})")
                type(self).compared += 1

    def test_fixture_models(self):
        fixtures = sorted(d for d in os.listdir(os.path.join(SOURCE, "tests", "fixtures"))
                          if d.startswith("f") and os.path.isdir(os.path.join(SOURCE, "tests", "fixtures", d)))
        self.assertGreaterEqual(len(fixtures), 6)
        for name in fixtures:
            d = os.path.join(SOURCE, "tests", "fixtures", name)
            with open(os.path.join(d, "inputs.json")) as f:
                inputs = json.load(f)
            ids = np.array(inputs["input_ids"], dtype=np.int64)
            mask = np.array(inputs.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
            server = start_server(d)
            try:
                tensors = [("input_ids", "INT64", ids.shape, ids), ("attention_mask", "INT64", mask.shape, mask)]
                self.compare(server, tensors, label=name)
                # A subset, with the mask as BOOL.
                tensors[1] = ("attention_mask", "BOOL", mask.shape, mask.astype(bool))
                self.compare(server, tensors, ["token_logprobs", "embedding"], label=f"{name} BOOL mask")
            finally:
                self.assertEqual(server.stop(), 0)

    def test_bundled_model_text(self):
        server = start_server(os.path.join(SOURCE, "models", "default"))
        try:
            texts = ["In the beginning God created the heaven and the earth.", "Amen.", "caf\u00e9 \u2603"]
            self.compare(server, [("text", "BYTES", [len(texts)], texts)], label="default text")
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    if not SERVER or not os.path.exists(SERVER):
        print("usage: rest_client_test.py SERVER_BINARY SOURCE_DIR", file=sys.stderr)
        sys.exit(2)
    server_harness.run_tests(2)
