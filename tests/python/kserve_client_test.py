#!/usr/bin/python3
"""End-to-end test with a real Python gRPC client (Debian's python3-grpcio).

Generates stubs from the project's proto/ (and grpc-proto's health.proto) into a temp dir,
starts reformer-server on a fixture model directory with --grpc_port 0, and checks:
  * ModelInfer (raw INT64 and typed INT32 + BOOL mask, right and left padding): each row equals the
    fixture's solo/ expectation for that document alone within 1e-4 (logits and hidden_states);
    rows without padding also equal the top-level expected values; padding positions are 0;
  * id echo, usage parameters, ModelMetadata/ServerReady, grpc.health.v1 "", liveness, readiness;
  * INVALID_ARGUMENT for a mask with a hole;
  * SIGTERM -> exit code 0.
Usage: kserve_client_test.py SERVER_BINARY SOURCE_DIR
"""
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import unittest

import numpy as np

import server_harness

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
TOL = 1e-4
EXTRA_PROTOS = (("grpc/health/v1/health.proto", "reformer_test_health"),
                ("grpc/reflection/v1alpha/reflection.proto", "reformer_test_reflection"))


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    dtypes = {"F32": np.float32, "I32": np.int32, "U8": np.uint8, "I64": np.int64}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def generate_stubs(out_dir):
    from grpc_tools import protoc
    server_harness.generate_stubs(SOURCE, out_dir, "grpc_service.proto", "reformer.proto")
    # gRPC's health and reflection protos (Debian package grpc-proto), under module names of their own:
    # generated as grpc/health/v1/health_pb2.py they would be shadowed by the installed `grpc` package
    # (already imported, it has no `health` submodule), and the checks that use them silently vanished.
    # The wire names (grpc.health.v1.Health, ...) come from the protos' package lines and are unchanged.
    grpc_proto_root = "/usr/share/grpc-proto"
    for extra, module in EXTRA_PROTOS:
        src = os.path.join(grpc_proto_root, extra)
        if not os.path.exists(src):
            raise RuntimeError(f"{src} is missing (Debian package grpc-proto, scripts/install-deps.sh)")
        shutil.copy(src, os.path.join(out_dir, module + ".proto"))
        if protoc.main(["protoc", "-I" + out_dir, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                        os.path.join(out_dir, module + ".proto")]) != 0:
            raise RuntimeError("protoc failed for " + extra)


class Server(server_harness.Server):
    def __init__(self, model_dir, env=None):
        super().__init__(SERVER, model_dir, "--workers", "2", "--threads_per_worker", "1", env=env)

    def check_ready(self, channel):
        """gRPC ServerReady agrees with /readyz (which the start-up waited for)."""
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        if not pbg.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=5).ready:
            raise AssertionError("ServerReady is false while /readyz answers 200")


class KServeClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(cls.tmp.name)
        cls.checked = set()
        cls.fixtures_run = 0

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        # The health and reflection checks must have run (they once vanished without a trace).
        if cls.fixtures_run and cls.checked != {"health", "reflection"}:
            raise AssertionError(f"health/reflection checks did not run: ran {sorted(cls.checked)}")

    def fixture(self, name):
        d = os.path.join(SOURCE, "tests", "fixtures", name)
        with open(os.path.join(d, "inputs.json")) as f:
            inputs = json.load(f)
        ids = np.array(inputs["input_ids"], dtype=np.int64)
        mask = np.array(inputs.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
        expected = load_safetensors(os.path.join(d, "expected.safetensors"))
        solo = {}
        index_path = os.path.join(d, "solo", "index.json")
        if os.path.exists(index_path):
            with open(index_path) as f:
                for row in json.load(f)["rows"]:
                    solo[row["row"]] = load_safetensors(os.path.join(d, "solo", row["dir"], "expected.safetensors"))
        return d, ids, mask, expected, solo

    def infer(self, stub, model, ids, mask, typed=False, request_id="req-1", outputs=None):
        import grpc_service_pb2 as pb
        req = pb.ModelInferRequest(model_name=model, id=request_id)
        b, t = ids.shape
        t_ids = req.inputs.add(name="input_ids", datatype="INT32" if typed else "INT64", shape=[b, t])
        t_mask = req.inputs.add(name="attention_mask", datatype="BOOL" if typed else "INT64", shape=[b, t])
        if typed:
            t_ids.contents.int_contents.extend(ids.astype(np.int32).ravel().tolist())
            t_mask.contents.bool_contents.extend([bool(v) for v in mask.ravel()])
        else:
            req.raw_input_contents.append(ids.astype("<i8").tobytes())
            req.raw_input_contents.append(mask.astype("<i8").tobytes())
        for name in outputs or []:
            req.outputs.add(name=name)
        resp = stub.ModelInfer(req, timeout=120)
        out = {}
        for tensor, raw in zip(resp.outputs, resp.raw_output_contents):
            dtype = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[tensor.datatype]
            out[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(list(tensor.shape))
        return resp, out

    def check_rows(self, out, ids, mask, expected, solo):
        b = ids.shape[0]
        checked = 0
        for r in range(b):
            pos = np.nonzero(mask[r])[0]
            n = len(pos)
            for key in ("logits", "hidden_states"):
                got = out[key][r, pos]
                if r in solo:
                    ref = solo[r][key][0]
                    self.assertEqual(ref.shape[0], n)
                    diff = float(np.max(np.abs(got - ref)))
                    self.assertLessEqual(diff, TOL, f"row {r} {key} vs solo: max diff {diff}")
                    checked += 1
                if n == ids.shape[1]:  # no padding: the top-level values apply directly
                    diff = float(np.max(np.abs(got - expected[key][r])))
                    self.assertLessEqual(diff, TOL, f"row {r} {key} vs batch expected: max diff {diff}")
                    checked += 1
                pad = np.setdiff1d(np.arange(ids.shape[1]), pos)
                if len(pad):
                    self.assertEqual(float(np.max(np.abs(out[key][r, pad]))), 0.0)
        return checked

    def run_fixture(self, name, variants):
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        d, ids, mask, expected, solo = self.fixture(name)
        server = Server(d)
        type(self).fixtures_run += 1
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                                       options=[("grpc.max_receive_message_length", 1 << 30)]) as channel:
                server.check_ready(channel)
                stub = pbg.GRPCInferenceServiceStub(channel)
                for variant in variants:
                    v_ids, v_mask, v_solo, v_expected = variant(ids, mask, solo, expected)
                    for typed in (False, True):
                        resp, out = self.infer(stub, name, v_ids, v_mask, typed=typed, request_id=f"{name}-{typed}")
                        self.assertEqual(resp.id, f"{name}-{typed}")
                        self.assertEqual(resp.model_name, name)
                        self.assertEqual(resp.model_version, "1")
                        self.assertEqual(resp.parameters["tokens"].int64_param, int(v_mask.sum()))
                        self.assertIn("queue_ms", resp.parameters)
                        self.assertEqual(set(out), {"logits", "hidden_states", "token_logprobs", "embedding"})
                        self.assertGreater(self.check_rows(out, v_ids, v_mask, v_expected, v_solo), 0)
                # Only the requested output comes back.
                resp, out = self.infer(stub, name, ids, mask, outputs=["embedding"])
                self.assertEqual(list(out), ["embedding"])
                # A mask with a hole is INVALID_ARGUMENT naming row and position.
                bad = mask.copy()
                bad[0, 3] = 0
                with self.assertRaises(grpc.RpcError) as ctx:
                    self.infer(stub, name, ids, bad)
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("row 0", ctx.exception.details())
                self.assertIn("position 3", ctx.exception.details())
                # ModelStatistics: every batch size's engine time is measured (never a placeholder 0).
                stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=name)).model_stats[0]
                self.assertGreater(len(stats.batch_stats), 0)
                self.assertEqual(sum(b.compute_infer.count for b in stats.batch_stats), stats.execution_count)
                for b in stats.batch_stats:
                    self.assertGreater(b.compute_infer.ns, 0, b)
                # Metadata and health.
                meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name))
                self.assertEqual(meta.name, name)
                self.assertIn("logits", [o.name for o in meta.outputs])
                # grpc.health.v1: "", liveness and readiness all SERVING (no try/except: an import
                # error fails the test rather than dropping the check).
                import reformer_test_health_pb2 as health_pb2
                import reformer_test_health_pb2_grpc as health_pb2_grpc
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", "liveness", "readiness"):
                    status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
                    self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING, service)
                self.checked.add("health")
                # Server reflection lists our services (what `buf curl` / grpcurl rely on).
                import reformer_test_reflection_pb2 as reflection_pb2
                import reformer_test_reflection_pb2_grpc as reflection_pb2_grpc
                refl = reflection_pb2_grpc.ServerReflectionStub(channel)
                answers = list(refl.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
                names = [svc.name for svc in answers[0].list_services_response.service]
                self.assertIn("inference.GRPCInferenceService", names)
                self.assertIn("reformer.v1.ReformerService", names)
                self.checked.add("reflection")
        finally:
            rc = server.stop()
        self.assertEqual(rc, 0, "reformer-server must exit 0 on SIGTERM")

    def test_f1_right_and_left_padding(self):
        def as_given(ids, mask, solo, expected):
            return ids, mask, solo, expected

        def left_padded(ids, mask, solo, expected):
            # Move every row's real tokens to the end (left padding); same documents.
            ids2 = np.zeros_like(ids)
            mask2 = np.zeros_like(mask)
            t = ids.shape[1]
            for r in range(ids.shape[0]):
                real = ids[r][mask[r] == 1]
                ids2[r, t - len(real):] = real
                ids2[r, :t - len(real)] = 7  # padding ids are ignored
                mask2[r, t - len(real):] = 1
            return ids2, mask2, solo, expected

        self.run_fixture("f1_mixed_causal_multihash_rightpad", [as_given, left_padded])

    def test_f3_bidirectional_three_rows(self):
        def as_given(ids, mask, solo, expected):
            return ids, mask, solo, expected

        self.run_fixture("f3_bidirectional_lookahead_noaxial", [as_given])


    def test_sigterm_drains_queued_work(self):
        """SIGTERM: readiness flips, new requests get UNAVAILABLE, queued work still completes, exit 0."""
        import time
        import urllib.error
        import urllib.request
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        name = "f1_mixed_causal_multihash_rightpad"
        d, ids, mask, expected, solo = self.fixture(name)
        # A long batching delay keeps the first request queued while the signal arrives.
        # (Set through REFORMER_* environment variables, as a container would.)
        server = Server(d, env={"REFORMER_MAX_QUEUE_DELAY_MS": "1500", "REFORMER_DRAIN_TIMEOUT_S": "20",
                                "REFORMER_DRAIN_MIN_S": "3", "REFORMER_WARMUP": "false"})
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                server.check_ready(channel)
                stub = pbg.GRPCInferenceServiceStub(channel)
                req = pb.ModelInferRequest(model_name=name, id="inflight")
                req.inputs.add(name="input_ids", datatype="INT64", shape=list(ids.shape))
                req.raw_input_contents.append(ids.astype("<i8").tobytes())
                req.outputs.add(name="embedding")
                future = stub.ModelInfer.future(req, timeout=60)
                metrics_url = f"http://127.0.0.1:{server.http_port}/metrics"
                deadline = time.time() + 10
                while time.time() < deadline:
                    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
                    if "reformer_inflight_requests 1" in text or "reformer_queue_requests 1" in text:
                        break
                    time.sleep(0.01)
                self.assertFalse(future.done(), "the request must still be queued when SIGTERM arrives")
                server.proc.send_signal(signal.SIGTERM)
                # Readiness flips at once; liveness stays.
                deadline = time.time() + 5
                ready_status = 200
                while time.time() < deadline and ready_status == 200:
                    try:
                        ready_status = urllib.request.urlopen(
                            f"http://127.0.0.1:{server.http_port}/readyz", timeout=5).status
                    except urllib.error.HTTPError as e:
                        ready_status = e.code
                    except urllib.error.URLError:
                        break
                    time.sleep(0.01)
                self.assertEqual(ready_status, 503)
                with self.assertRaises(grpc.RpcError) as ctx:
                    stub.ModelInfer(req, timeout=10)
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
                resp = future.result(timeout=60)
                self.assertEqual(resp.id, "inflight")
                self.assertEqual(resp.outputs[0].name, "embedding")
            rc = server.proc.wait(timeout=60)
        finally:
            rc = server.stop()  # the exit code above, or SIGTERM after a failure
        self.assertEqual(rc, 0)


if __name__ == "__main__":
    if not SERVER or not os.path.exists(SERVER):
        print("usage: kserve_client_test.py SERVER_BINARY SOURCE_DIR", file=sys.stderr)
        sys.exit(2)
    unittest.main(argv=[sys.argv[0]])
