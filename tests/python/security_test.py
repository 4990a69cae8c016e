#!/usr/bin/python3
"""TLS, mutual TLS, certificate rotation and bearer tokens against a real reformer-server.

Every certificate is made at test time with the openssl CLI: a CA, two server certificates from it (the
second for the rotation), a client CA with a client certificate, and a second, unrelated CA with a client
certificate of its own. The clients are Debian's python3-grpcio and Python's ssl module (to read the
certificate a new connection is shown).

  * TLS + mTLS: a plaintext client, a TLS client without a certificate and one whose certificate comes
    from another CA all fail; the right client certificate works. The HTTP port stays plaintext and, with
    TLS on, serves probes and /metrics only (403 for the API).
  * Rotation: the certificate files are replaced (renamed into place, as Kubernetes swaps a Secret); new
    connections then see the new certificate's subject and serial while a ModelStreamInfer stream opened
    before keeps working and finishes OK, in the same server process. A replacement whose key does not
    match is refused: the new certificate stays, reformer_credential_reloads_total{result="rejected"}.
  * Tokens: every RPC of the KServe and reformer.v1 services (taken from the proto descriptors, so an RPC
    added later is covered too) is UNAUTHENTICATED without a token and with a wrong one, except ServerLive
    and ServerReady; grpc.health.v1 and reflection stay open; HTTP answers 401 with WWW-Authenticate (REST
    inference, config and stats included), and /metrics, /healthz, /readyz stay open.
    reformer_requests_total counts per tenant, gRPC and REST. The tokens file is
    rotated (a tenant removed, one added) and a malformed replacement keeps the old tokens. No token is
    ever written to the server's log.
  * Start-up: a missing certificate, a key of another certificate, an expired certificate and a malformed
    tokens file each stop the server, naming the file (and line), without printing a token.
Usage: security_test.py SERVER_BINARY SOURCE_DIR
"""
import json
import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kserve_client_test as kct  # noqa: E402  (stub generation)
import server_harness  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
SOURCE = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL = os.path.join(SOURCE, "tests", "fixtures", "f1_mixed_causal_multihash_rightpad")
TOKENS = {"alice": "alice-secret-token-0001", "bob": "bob-secret-token-000002", "carol": "carol-secret-token-0003"}
POLL_S = "0.2"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, server=True, days=2):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=d)
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" if server
                else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", str(days), "-extfile", ext, cwd=d)


def cert_facts(pem_path):
    """(subject CN, serial hex) of a PEM certificate file."""
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-serial", "-in", pem_path],
                         check=True, capture_output=True, text=True).stdout
    cn = re.search(r"CN\s*=\s*([^,\n]+)", out).group(1).strip()
    serial = re.search(r"serial=([0-9A-F]+)", out).group(1)
    return cn, serial


def replace_file(path, data):
    """Replaces `path` atomically (write aside, rename), as kubelet swaps a Secret volume."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Server(server_harness.Server):
    def __init__(self, *args):
        super().__init__(SERVER, MODEL, "--workers", "1", "--threads_per_worker", "1",
                         "--credentials_poll_interval_s", POLL_S, *args)

    def http(self, path, token=None, body=None):
        """GET, or POST of `body` (JSON text) when given."""
        data = body.encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        if token is not None:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def metric(self, name, **labels):
        text = self.http("/metrics")[1]
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self):
        return "".join(self.stderr)


def run_server_expect_failure(*args):
    p = subprocess.run([SERVER, "--model_dir", MODEL, "--grpc_port", "0", "--http_port", "0",
                        "--bind_address", "127.0.0.1", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        kct.SOURCE = SOURCE
        kct.generate_stubs(cls.dir)
        d = cls.dir
        make_ca(d, "server-ca")
        make_cert(d, "server-a", "server-ca")
        make_cert(d, "server-b", "server-ca")
        make_ca(d, "client-ca")
        make_cert(d, "client-good", "client-ca", server=False)
        make_ca(d, "other-ca")
        make_cert(d, "client-other", "other-ca", server=False)
        make_cert(d, "server-expired", "server-ca", days=-1)
        import grpc_service_pb2
        import reformer_pb2
        cls.pb = grpc_service_pb2
        cls.rpb = reformer_pb2

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        for ext in ("pem", "key"):  # every test starts serving server-a
            replace_file(self.path(f"tls.{ext}"), read(self.path(f"server-a.{ext}")))

    def path(self, name):
        return os.path.join(self.dir, name)

    def tokens_file(self, text):
        path = self.path("tokens.txt")
        replace_file(path, text.encode())
        return path

    def infer_request(self, request_id="r"):
        pb = self.pb
        ids = np.arange(1, 9, dtype=np.int64).reshape(1, 8)
        t = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=[1, 8])
        return pb.ModelInferRequest(model_name="f1_mixed_causal_multihash_rightpad", id=request_id, inputs=[t],
                                    outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="token_logprobs")],
                                    raw_input_contents=[ids.tobytes()])

    def tls_channel(self, server, client=None):
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(self.path("server-ca.pem")),
            private_key=read(self.path(f"{client}.key")) if client else None,
            certificate_chain=read(self.path(f"{client}.pem")) if client else None)
        return grpc.secure_channel(f"localhost:{server.grpc_port}", creds)

    def served_certificate(self, server, client="client-good"):
        """(CN, serial) of the certificate a new TLS connection to the gRPC port is shown."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.path("server-ca.pem"))
        ctx.load_cert_chain(self.path(f"{client}.pem"), self.path(f"{client}.key"))
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                der = t.getpeercert(binary_form=True)
        pem_path = self.path("seen.pem")
        with open(pem_path, "w") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        return cert_facts(pem_path)

    def wait_for_certificate(self, server, want, timeout=20):
        deadline = time.time() + timeout
        seen = None
        while time.time() < deadline:
            seen = self.served_certificate(server)
            if seen == want:
                return
            time.sleep(0.2)
        self.fail(f"new connections still see {seen}, want {want}")

    # --- TLS, mutual TLS, rotation -----------------------------------------------------------------------

    def test_mutual_tls_and_rotation(self):
        import grpc_service_pb2_grpc as pbg
        tokens = self.tokens_file(f"alice:{TOKENS['alice']}\n")
        server = Server("--tls_cert_file", self.path("tls.pem"), "--tls_key_file", self.path("tls.key"),
                        "--tls_client_ca_file", self.path("client-ca.pem"), "--auth_tokens_file", tokens)
        try:
            auth = [("authorization", "Bearer " + TOKENS["alice"])]
            # Plaintext, no client certificate, a certificate of another CA: no call gets through.
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
                with self.assertRaises(grpc.RpcError) as e:
                    pbg.GRPCInferenceServiceStub(ch).ServerLive(self.pb.ServerLiveRequest(), timeout=5)
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            for client in (None, "client-other"):
                with self.tls_channel(server, client) as ch:
                    with self.assertRaises(grpc.RpcError, msg=str(client)) as e:
                        pbg.GRPCInferenceServiceStub(ch).ServerLive(self.pb.ServerLiveRequest(), timeout=5)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, client)
            # The HTTP port stays plaintext: probes and metrics, no API (--http_api auto with TLS).
            self.assertEqual(server.http("/readyz")[0], 200)
            self.assertEqual(server.http("/metrics")[0], 200)
            self.assertEqual(server.http("/v2", token=TOKENS["alice"])[0], 403)
            self.assertEqual(server.http("/v2/models/f1_mixed_causal_multihash_rightpad")[0], 403)
            self.assertEqual(server.http("/v2/models/f1_mixed_causal_multihash_rightpad/infer", body="{}")[0], 403)

            a = cert_facts(self.path("server-a.pem"))
            b = cert_facts(self.path("server-b.pem"))
            self.assertEqual(self.served_certificate(server), a)
            pid = server.proc.pid
            # A stream opened before the rotation.
            requests = queue.Queue()
            ch = self.tls_channel(server, "client-good")
            stub = pbg.GRPCInferenceServiceStub(ch)
            self.assertTrue(stub.ModelInfer(self.infer_request(), metadata=auth, timeout=30).raw_output_contents)
            responses = stub.ModelStreamInfer(iter(requests.get, None), metadata=auth, timeout=120)
            requests.put(self.infer_request("before"))
            first = next(responses)
            self.assertEqual(first.error_message, "")
            self.assertEqual(first.infer_response.id, "before")
            # Rotate: key first, then the certificate (each renamed into place).
            replace_file(self.path("tls.key"), read(self.path("server-b.key")))
            replace_file(self.path("tls.pem"), read(self.path("server-b.pem")))
            self.wait_for_certificate(server, b)
            # The stream from before still works on its connection, and finishes OK.
            requests.put(self.infer_request("after"))
            second = next(responses)
            self.assertEqual(second.error_message, "")
            self.assertEqual(second.infer_response.id, "after")
            requests.put(None)
            self.assertEqual(list(responses), [])
            self.assertEqual(responses.code(), grpc.StatusCode.OK)
            ch.close()
            # New channels work against the new certificate.
            with self.tls_channel(server, "client-good") as ch2:
                pbg.GRPCInferenceServiceStub(ch2).ModelInfer(self.infer_request(), metadata=auth, timeout=30)
            self.assertGreaterEqual(server.metric("reformer_credential_reloads_total", kind="tls", result="reloaded"), 1)
            # A broken replacement (server-a's key under server-b's certificate) is refused; b stays.
            replace_file(self.path("tls.key"), read(self.path("server-a.key")))
            deadline = time.time() + 20
            while server.metric("reformer_credential_reloads_total", kind="tls", result="rejected") < 1:
                self.assertLess(time.time(), deadline, "the broken key was not refused")
                time.sleep(0.1)
            self.assertEqual(self.served_certificate(server), b)
            self.assertIn("is not the private key of the certificate", server.log())
            self.assertEqual(server.proc.pid, pid)
            self.assertIsNone(server.proc.poll())
        finally:
            self.assertEqual(server.stop(), 0)

    def test_tls_without_client_certificates(self):
        import grpc_service_pb2_grpc as pbg
        server = Server("--tls_cert_file", self.path("tls.pem"), "--tls_key_file", self.path("tls.key"),
                        "--http_api", "on")
        try:
            with self.tls_channel(server) as ch:
                stub = pbg.GRPCInferenceServiceStub(ch)
                self.assertTrue(stub.ServerReady(self.pb.ServerReadyRequest(), timeout=10).ready)
                stub.ModelInfer(self.infer_request(), timeout=30)
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
                with self.assertRaises(grpc.RpcError):
                    pbg.GRPCInferenceServiceStub(ch).ServerLive(self.pb.ServerLiveRequest(), timeout=5)
            self.assertEqual(server.http("/v2")[0], 200)  # --http_api on: served despite TLS
        finally:
            self.assertEqual(server.stop(), 0)

    # --- Bearer tokens ---------------------------------------------------------------------------------------

    def call_every_method(self, channel, metadata):
        """{"Service/Method": status code} for every RPC of the two services, each called with an empty
        request message (streams: one empty message)."""
        codes = {}
        for module in (self.pb, self.rpb):
            for service in module.DESCRIPTOR.services_by_name.values():
                for m in service.methods:
                    path = f"/{service.full_name}/{m.name}"
                    ser = lambda msg: msg.SerializeToString()  # noqa: E731
                    from google.protobuf import message_factory
                    req_cls = message_factory.MessageFactory().GetPrototype(m.input_type)
                    des = lambda b: b  # noqa: E731
                    try:
                        if m.client_streaming and m.server_streaming:
                            call = channel.stream_stream(path, request_serializer=ser, response_deserializer=des)
                            list(call(iter([req_cls()]), metadata=metadata, timeout=30))
                        elif m.server_streaming:
                            call = channel.unary_stream(path, request_serializer=ser, response_deserializer=des)
                            list(call(req_cls(), metadata=metadata, timeout=30))
                        else:
                            call = channel.unary_unary(path, request_serializer=ser, response_deserializer=des)
                            call(req_cls(), metadata=metadata, timeout=30)
                        codes[f"{service.name}/{m.name}"] = grpc.StatusCode.OK
                    except grpc.RpcError as e:
                        codes[f"{service.name}/{m.name}"] = e.code()
        return codes

    def test_tokens(self):
        import grpc_service_pb2_grpc as pbg
        import reformer_test_health_pb2 as health_pb2
        import reformer_test_health_pb2_grpc as health_grpc
        import reformer_test_reflection_pb2 as refl_pb2
        import reformer_test_reflection_pb2_grpc as refl_grpc
        tokens = self.tokens_file(f"# tenants\n\nalice:{TOKENS['alice']}\n  bob : {TOKENS['bob']}  \n")
        server = Server("--auth_tokens_file", tokens)
        open_methods = {"GRPCInferenceService/ServerLive", "GRPCInferenceService/ServerReady"}
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
                bearer = lambda t: [("authorization", "Bearer " + t)]  # noqa: E731
                for label, md in (("no token", None), ("wrong token", bearer("not-a-token-0123456789")),
                                  ("not bearer", [("authorization", "Basic " + TOKENS["alice"])]),
                                  ("two values", bearer(TOKENS["alice"]) + bearer(TOKENS["alice"]))):
                    codes = self.call_every_method(ch, md)
                    self.assertGreaterEqual(len(codes), 13, codes)
                    for method, code in codes.items():
                        want = grpc.StatusCode.OK if method in open_methods else grpc.StatusCode.UNAUTHENTICATED
                        self.assertEqual(code, want, f"{label}: {method}")
                codes = self.call_every_method(ch, bearer(TOKENS["bob"]))
                for method, code in codes.items():
                    self.assertNotEqual(code, grpc.StatusCode.UNAUTHENTICATED, method)
                # Health and reflection need no token.
                health = health_grpc.HealthStub(ch)
                for service in ("", "liveness", "readiness"):
                    self.assertEqual(health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status,
                                     health_pb2.HealthCheckResponse.SERVING)
                listed = list(refl_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                    iter([refl_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
                names = [s.name for s in listed[0].list_services_response.service]
                self.assertIn("inference.GRPCInferenceService", names)
                # Tenants: 2 x alice, 1 x bob OK (bob's sweep above added its own), 1 refused.
                stub = pbg.GRPCInferenceServiceStub(ch)
                before_bob = server.metric("reformer_requests_total", method="ModelInfer", tenant="bob", code="OK")
                for _ in range(2):
                    stub.ModelInfer(self.infer_request(), metadata=bearer(TOKENS["alice"]), timeout=30)
                stub.ModelInfer(self.infer_request(), metadata=bearer(TOKENS["bob"]), timeout=30)
                self.assertEqual(server.metric("reformer_requests_total", method="ModelInfer", tenant="alice",
                                               code="OK"), 2)
                self.assertEqual(server.metric("reformer_requests_total", method="ModelInfer", tenant="bob",
                                               code="OK"), before_bob + 1)
                self.assertGreaterEqual(server.metric("reformer_requests_total", method="ModelInfer",
                                                      tenant="anonymous", code="Unauthenticated"), 4)
                self.check_http_tokens(server)
                self.check_token_rotation(server, stub, tokens)
            log = server.log()
            for token in TOKENS.values():
                self.assertNotIn(token, log)
            self.assertNotIn("not-a-token-0123456789", log)
        finally:
            self.assertEqual(server.stop(), 0)

    def check_http_tokens(self, server):
        for path in ("/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            self.assertEqual(server.http(path)[0], 200, path)
        status, body, headers = server.http("/v2")
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("WWW-Authenticate"), 'Bearer realm="reformer-serve"')
        self.assertIn("Bearer", body)
        status, _, headers = server.http("/v2/models/f1_mixed_causal_multihash_rightpad", token="wrong-token-0123456789")
        self.assertEqual(status, 401)
        self.assertIn('error="invalid_token"', headers.get("WWW-Authenticate"))
        self.assertEqual(server.http("/v2", token=TOKENS["alice"])[0], 200)
        self.assertEqual(server.http("/v2/models/f1_mixed_causal_multihash_rightpad/ready", token=TOKENS["bob"])[0], 200)
        self.check_rest_tokens(server)

    def check_rest_tokens(self, server):
        """REST inference, config and stats behind the same tokens; the tenant labels REST.ModelInfer."""
        model = "/v2/models/f1_mixed_causal_multihash_rightpad"
        body = json.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 8],
                                       "data": list(range(1, 9))}], "outputs": [{"name": "token_logprobs"}]})
        count = lambda tenant, code: server.metric(  # noqa: E731
            "reformer_requests_total", method="REST.ModelInfer", tenant=tenant, code=code)
        refused_before = count("anonymous", "Unauthenticated")
        status, text, headers = server.http(model + "/infer", body=body)
        self.assertEqual(status, 401)
        self.assertIn("Bearer", json.loads(text)["error"])
        self.assertEqual(headers.get("WWW-Authenticate"), 'Bearer realm="reformer-serve"')
        status, text, headers = server.http(model + "/versions/1/infer", token="wrong-token-0123456789", body=body)
        self.assertEqual(status, 401)
        self.assertIn("error", json.loads(text))
        self.assertIn('error="invalid_token"', headers.get("WWW-Authenticate"))
        for path in (model + "/config", model + "/stats"):
            self.assertEqual(server.http(path)[0], 401, path)
            self.assertEqual(server.http(path, token=TOKENS["bob"])[0], 200, path)
        status, text, _ = server.http(model + "/infer", token=TOKENS["alice"], body=body)
        self.assertEqual(status, 200, text)
        self.assertEqual(json.loads(text)["outputs"][0]["shape"], [1, 8])
        self.assertEqual(server.http(model + "/infer", token=TOKENS["bob"], body="{")[0], 400)
        self.assertEqual(count("alice", "OK"), 1)
        self.assertEqual(count("bob", "InvalidArgument"), 1)
        self.assertEqual(count("anonymous", "Unauthenticated"), refused_before + 2)

    def check_token_rotation(self, server, stub, tokens):
        bearer = lambda t: [("authorization", "Bearer " + t)]  # noqa: E731
        # bob leaves, carol arrives; alice keeps her token.
        replace_file(tokens, f"alice:{TOKENS['alice']}\ncarol:{TOKENS['carol']}\n".encode())
        deadline = time.time() + 20
        while True:
            try:
                stub.ModelInfer(self.infer_request(), metadata=bearer(TOKENS["carol"]), timeout=30)
                break
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
                self.assertLess(time.time(), deadline, "the new tokens file was not taken into use")
                time.sleep(0.1)
        with self.assertRaises(grpc.RpcError) as e:
            stub.ModelInfer(self.infer_request(), metadata=bearer(TOKENS["bob"]), timeout=30)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        stub.ModelInfer(self.infer_request(), metadata=bearer(TOKENS["alice"]), timeout=30)
        self.assertEqual(server.metric("reformer_credential_reloads_total", kind="tokens", result="reloaded"), 1)
        # A malformed replacement (line 2 is a bare token) keeps alice and carol.
        replace_file(tokens, f"alice:{TOKENS['alice']}\n{TOKENS['bob']}\n".encode())
        while server.metric("reformer_credential_reloads_total", kind="tokens", result="rejected") < 1:
            self.assertLess(time.time(), deadline + 20, "the malformed tokens file was not refused")
            time.sleep(0.1)
        stub.ModelInfer(self.infer_request(), metadata=bearer(TOKENS["carol"]), timeout=30)
        self.assertIn("line 2: expected 'name:token'", server.log())

    # --- Start-up errors -------------------------------------------------------------------------------------

    def test_startup_refuses_bad_files(self):
        missing = self.path("missing.pem")
        rc, err = run_server_expect_failure("--tls_cert_file", missing, "--tls_key_file", self.path("server-a.key"))
        self.assertEqual(rc, 1, err)
        self.assertIn(f"--tls_cert_file: cannot open {missing}", err)
        rc, err = run_server_expect_failure("--tls_cert_file", self.path("server-a.pem"),
                                            "--tls_key_file", self.path("server-b.key"))
        self.assertEqual(rc, 1, err)
        self.assertIn(f"--tls_key_file {self.path('server-b.key')} is not the private key of the certificate", err)
        rc, err = run_server_expect_failure("--tls_cert_file", self.path("server-expired.pem"),
                                            "--tls_key_file", self.path("server-expired.key"))
        self.assertEqual(rc, 1, err)
        self.assertIn("expired at", err)
        rc, err = run_server_expect_failure("--tls_cert_file", self.path("server-a.key"),
                                            "--tls_key_file", self.path("server-a.key"))
        self.assertEqual(rc, 1, err)
        self.assertIn("no PEM certificate in it", err)
        rc, err = run_server_expect_failure("--tls_cert_file", self.path("server-a.pem"),
                                            "--tls_key_file", self.path("server-a.key"),
                                            "--tls_client_ca_file", self.path("server-a.key"))
        self.assertEqual(rc, 1, err)
        self.assertIn(f"--tls_client_ca_file {self.path('server-a.key')}: no PEM certificate", err)
        rc, err = run_server_expect_failure("--tls_cert_file", self.path("server-a.pem"))
        self.assertEqual(rc, 2, err)
        self.assertIn("--tls_cert_file and --tls_key_file go together", err)
        rc, err = run_server_expect_failure("--tls_client_ca_file", self.path("client-ca.pem"))
        self.assertEqual(rc, 2, err)
        bad = self.tokens_file(f"alice:{TOKENS['alice']}\n\n{TOKENS['bob']}\n")
        rc, err = run_server_expect_failure("--auth_tokens_file", bad)
        self.assertEqual(rc, 1, err)
        self.assertIn(f"tokens file {bad} line 3: expected 'name:token'", err)
        for token in TOKENS.values():
            self.assertNotIn(token, err)
        short = self.tokens_file("dave:short\n")
        rc, err = run_server_expect_failure("--auth_tokens_file", short)
        self.assertEqual(rc, 1, err)
        self.assertIn("line 1: the token is shorter than 16 characters (name 'dave')", err)
        self.assertNotIn("short\n", err.replace("shorter", ""))


if __name__ == "__main__":
    if not SERVER:
        print("usage: security_test.py SERVER_BINARY SOURCE_DIR", file=sys.stderr)
        sys.exit(2)
    unittest.main(argv=[sys.argv[0], "-v"])
