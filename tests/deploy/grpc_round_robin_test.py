#!/usr/bin/python3
"""gRPC client-side load balancing across two reformer-server processes (issue 13 item 5; deploy/README.md,
"gRPC load balancing").

Two servers on loopback (ports 0) stand for two pods behind the headless Service; a static resolver list
(`ipv4:127.0.0.1:P1,127.0.0.1:P2`) stands for the DNS answer with every pod IP. Each server's /metrics counter
reformer_requests_total{method="ModelInfer",code="OK"} says how many requests it served.
  * the README's service config {"loadBalancingConfig": [{"round_robin": {}}]} spreads requests over both;
  * so does the older channel argument grpc.lb_policy_name=round_robin;
  * control: the default policy (pick_first) sends every request to one server -- what a ClusterIP Service
    (one address) does to a long-lived connection, and proof that this test can fail;
  * the same with the C++ client (grpc::ChannelArguments::SetServiceConfigJSON, as in the README).
Usage: grpc_round_robin_test.py SERVER_BINARY SOURCE_DIR CPP_CLIENT_BINARY
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Server, generate_stubs  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
CPP_CLIENT = sys.argv[3] if len(sys.argv) > 3 else None   # tests/deploy/grpc_round_robin_client.cc
REQUESTS = 20
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


class RoundRobinTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(SOURCE, cls.tmp.name)
        model = os.path.join(SOURCE, "models", "default")
        args = ["--model_dir", model, "--model_name", "default", "--workers", "1", "--threads_per_worker", "1"]
        cls.servers = [Server(SERVER, args) for _ in range(2)]  # each returns once ready
        cls.target = "ipv4:" + ",".join(f"127.0.0.1:{s.grpc_port}" for s in cls.servers)

    @classmethod
    def tearDownClass(cls):
        codes = [s.stop() for s in cls.servers]
        cls.tmp.cleanup()
        assert codes == [0, 0], f"server exit codes after SIGTERM: {codes}"

    def served(self):
        return [s.counter("reformer_requests_total", method="ModelInfer", code="OK") for s in self.servers]

    def send(self, options):
        """REQUESTS ModelInfer calls over ONE channel (one client), each a tiny embedding request."""
        import grpc
        import grpc_service_pb2 as pb
        import grpc_service_pb2_grpc as pbg
        before = self.served()
        with grpc.insecure_channel(self.target, options=options) as channel:
            stub = pbg.GRPCInferenceServiceStub(channel)
            for i in range(REQUESTS):
                req = pb.ModelInferRequest(model_name="default", id=f"rr-{i}")
                t = req.inputs.add(name="input_ids", datatype="INT64", shape=[1, 8])
                t.contents.int64_contents.extend([72, 101, 108, 108, 111, 32, 105 + i % 5, 110])
                req.outputs.add(name="embedding")
                resp = stub.ModelInfer(req, timeout=60, wait_for_ready=True)
                self.assertEqual(resp.id, f"rr-{i}")
        after = self.served()
        return [int(a - b) for a, b in zip(after, before)]

    def test_round_robin_service_config_spreads_requests(self):
        counts = self.send([("grpc.service_config", ROUND_ROBIN)])
        print("round_robin (service config):", counts)
        self.assertEqual(sum(counts), REQUESTS)
        # Round robin over two READY subchannels alternates; allow the first calls to land before both connect.
        self.assertGreaterEqual(min(counts), REQUESTS // 4, counts)

    def test_round_robin_channel_argument_spreads_requests(self):
        counts = self.send([("grpc.lb_policy_name", "round_robin")])
        print("round_robin (grpc.lb_policy_name):", counts)
        self.assertEqual(sum(counts), REQUESTS)
        self.assertGreaterEqual(min(counts), REQUESTS // 4, counts)

    def send_cpp(self, policy):
        self.assertIsNotNone(CPP_CLIENT, "the C++ client binary (third argument) is required")
        before = self.served()
        out = subprocess.run([CPP_CLIENT, self.target, "default", str(REQUESTS), policy],
                             capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), f"sent {REQUESTS}")
        return [int(a - b) for a, b in zip(self.served(), before)]

    def test_cpp_client_round_robin_spreads_requests(self):
        counts = self.send_cpp("round_robin")
        print("C++ round_robin:", counts)
        self.assertEqual(sum(counts), REQUESTS)
        self.assertGreaterEqual(min(counts), REQUESTS // 4, counts)

    def test_cpp_client_pick_first_sticks_to_one_server(self):
        counts = self.send_cpp("pick_first")
        print("C++ pick_first:", counts)
        self.assertEqual(sorted(counts), [0, REQUESTS], counts)

    def test_pick_first_sticks_to_one_server(self):
        counts = self.send([])
        print("pick_first (default):", counts)
        self.assertEqual(sorted(counts), [0, REQUESTS], counts)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
