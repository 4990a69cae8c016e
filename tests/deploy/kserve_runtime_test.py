#!/usr/bin/python3
"""reformer-server started exactly as KServe starts deploy/kserve's runtime (issue 13 item 4).

Reads kserve-container from deploy/kserve/clusterservingruntime.yaml, replaces {{.Name}} by the
InferenceService's name (deploy/kserve/inferenceservice.yaml) the way KServe templates the container, and puts
the bundled model where the storage initializer would (a temporary stand-in for /mnt/models; REFORMER_MODEL_DIR
is rewritten to it, nothing else). Ports are 0 (command-line flags win over REFORMER_*_PORT). Then:
  * REST: the model is served under the InferenceService's name (/v2/models/<isvc>, .../ready), /metrics answers;
  * gRPC: the probes' health services (readiness, liveness) are SERVING; ModelMetadata and ModelInfer work with
    model_name = <isvc>;
  * an empty model directory (a failed storage initializer) makes the server exit non-zero, naming the directory;
  * SIGTERM -> exit 0.
Usage: kserve_runtime_test.py SERVER_BINARY SOURCE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Server, generate_stubs  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")


def kserve_container_env(mnt_models):
    """The runtime container's environment after KServe's {{.Name}} templating, /mnt/models -> mnt_models."""
    kserve = os.path.join(SOURCE, "deploy", "kserve")
    with open(os.path.join(kserve, "clusterservingruntime.yaml")) as f:
        runtime = yaml.safe_load(f)
    with open(os.path.join(kserve, "inferenceservice.yaml")) as f:
        isvc = yaml.safe_load(f)
    container = next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")
    # KServe renders the whole container JSON as a Go template over the InferenceService's metadata.
    rendered = json.loads(json.dumps(container).replace("{{.Name}}", isvc["metadata"]["name"]))
    env = {e["name"]: e["value"] for e in rendered.get("env", [])}
    assert env["REFORMER_MODEL_DIR"] == "/mnt/models", env
    env["REFORMER_MODEL_DIR"] = mnt_models
    return isvc["metadata"]["name"], env, rendered.get("args", [])


class KServeRuntimeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(SOURCE, cls.tmp.name)
        cls.mnt = os.path.join(cls.tmp.name, "mnt", "models")
        shutil.copytree(os.path.join(SOURCE, "models", "default"), cls.mnt)
        cls.name, cls.env, cls.args = kserve_container_env(cls.mnt)
        cls.server = Server(SERVER, cls.args, env=cls.env)  # returns once ready

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        cls.tmp.cleanup()
        assert rc == 0, f"exit code {rc} after SIGTERM: {cls.server.stderr_tail()}"

    def test_rest_serves_the_isvc_name(self):
        self.assertEqual(self.server.model, self.name)
        status, body = self.server.http_get(f"/v2/models/{self.name}")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["name"], self.name)
        self.assertEqual(self.server.http_get(f"/v2/models/{self.name}/ready")[0], 200)
        self.assertEqual(self.server.http_get("/v2/models/default")[0], 404)
        status, body = self.server.http_get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn("reformer_queue_tokens", body)

    def test_grpc_probes_and_inference(self):
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        import deploy_test_health_pb2 as health_pb2
        import deploy_test_health_pb2_grpc as health_pb2_grpc
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("readiness", "liveness"):
                resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING, service)
            stub = pbg.GRPCInferenceServiceStub(ch)
            self.assertEqual(stub.ModelMetadata(pb.ModelMetadataRequest(name=self.name), timeout=10).name, self.name)
            req = pb.ModelInferRequest(model_name=self.name, id="kserve-1")
            t = req.inputs.add(name="input_ids", datatype="INT64", shape=[1, 6])
            t.contents.int64_contents.extend([73, 110, 32, 116, 104, 101])
            req.outputs.add(name="token_logprobs")
            resp = stub.ModelInfer(req, timeout=60)
            self.assertEqual((resp.model_name, resp.id), (self.name, "kserve-1"))
            self.assertEqual(list(resp.outputs[0].shape), [1, 6])

    def test_empty_model_dir_fails_loudly(self):
        empty = os.path.join(self.tmp.name, "empty-models")
        os.makedirs(empty)
        env = dict(self.env, REFORMER_MODEL_DIR=empty)
        env_all = {k: v for k, v in os.environ.items() if not k.startswith("REFORMER_")}
        proc = subprocess.run([SERVER, "--grpc_port", "0", "--http_port", "0", "--bind_address", "127.0.0.1"],
                              env=dict(env_all, **env), capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(empty, proc.stderr)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
