#!/usr/bin/python3
"""reformer-server run as deploy/k8s-tls configures it: its probes work, and a Secret update rotates the certificate.

The manifests are rendered by deploy/k8s/check (--print-json). The server container's REFORMER_* environment is
taken as it is (only the ports become 0, the model is a fixture and paths under /etc/reformer-serve move into a
temporary directory). Each Secret volume the container mounts is laid out as kubelet lays it out (a timestamped
directory, a `..data` symlink to it, one symlink per key), with certificates made at test time by openssl.

Checks: the startup, readiness and liveness probes of the manifest (httpGet, port by name) answer 200 on the
plaintext HTTP port; a native gRPC health probe cannot work on the TLS-only gRPC port (why the manifest uses HTTP);
an mTLS client with a bearer token from the tokens Secret is served, one without a token is UNAUTHENTICATED; the
REST API is off (403) and /metrics open; a Secret update done as kubelet does it (new directory, `..data` swapped
with one rename) makes new connections see the new certificate within the server's default poll interval, with no
restart, while the probes keep answering; SIGTERM exits 0.
Usage: k8s_tls_runtime_test.py SERVER_BINARY SOURCE_DIR   (exit 77 = Node missing: skipped outside CI)
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import numpy as np

SERVER, SOURCE = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(SOURCE, "tests", "python"))
import kserve_client_test as kct  # noqa: E402  (stub generation)
import security_test as st  # noqa: E402  (openssl helpers)

MODEL = os.path.join(SOURCE, "tests", "fixtures", "f1_mixed_causal_multihash_rightpad")
PREFIX = "/etc/reformer-serve"
TOKEN = "tenant-a-token-0123456789"


def render():
    if shutil.which("node") is None:
        print("SKIPPED: node is not installed (scripts/install-deps.sh --test)")
        sys.exit(77)
    out = subprocess.run(["node", os.path.join(SOURCE, "deploy/k8s/check/check-manifests.mjs"), "--dir",
                          os.path.join(SOURCE, "deploy/k8s-tls"), "--print-json"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def write_secret(mount_dir, files, generation):
    """Lays out a Secret volume as kubelet does; a later generation swaps `..data` with one rename."""
    os.makedirs(mount_dir, exist_ok=True)
    data_dir = f"..2026_01_01_00_00_0{generation}.000000001"
    os.makedirs(os.path.join(mount_dir, data_dir))
    for key, content in files.items():
        with open(os.path.join(mount_dir, data_dir, key), "wb") as f:
            f.write(content)
    tmp_link = os.path.join(mount_dir, "..data_tmp")
    os.symlink(data_dir, tmp_link)
    os.replace(tmp_link, os.path.join(mount_dir, "..data"))
    for key in files:
        link = os.path.join(mount_dir, key)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", key), link)


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def served_subject(d, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(d, "server-ca.pem"))
    ctx.load_cert_chain(os.path.join(d, "client-good.pem"), os.path.join(d, "client-good.key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            der = t.getpeercert(binary_form=True)
    path = os.path.join(d, "seen.pem")
    with open(path, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
    return st.cert_facts(path)[0]


def main():
    docs = render()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    tmp = tempfile.TemporaryDirectory()
    d = tmp.name
    kct.SOURCE = SOURCE
    kct.generate_stubs(d)
    st.make_ca(d, "server-ca")
    st.make_cert(d, "server-a", "server-ca")
    st.make_cert(d, "server-b", "server-ca")
    st.make_ca(d, "client-ca")
    st.make_cert(d, "client-good", "client-ca", server=False)
    secrets = {
        "reformer-serve-tls": lambda name: {"tls.crt": st.read(os.path.join(d, f"{name}.pem")),
                                            "tls.key": st.read(os.path.join(d, f"{name}.key")),
                                            "ca.crt": st.read(os.path.join(d, "client-ca.pem"))},
        "reformer-serve-tokens": lambda name: {"tokens": f"# tenants\ntenant-a:{TOKEN}\n".encode()},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for m in container["volumeMounts"]:
        secret = volumes[m["name"]].get("secret")
        if secret:
            mounts[secret["secretName"]] = d + m["mountPath"]
            write_secret(d + m["mountPath"], secrets[secret["secretName"]]("server-a"), 1)
    assert set(mounts) == set(secrets), f"the manifest mounts {sorted(mounts)}, expected {sorted(secrets)}"

    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env = {k: (d + v if v.startswith(PREFIX) else v) for k, v in env.items()}
    env.update(REFORMER_GRPC_PORT="0", REFORMER_HTTP_PORT="0", REFORMER_MODEL_DIR=MODEL,
               REFORMER_BIND_ADDRESS="127.0.0.1")
    proc = subprocess.Popen([SERVER], env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if "grpc_port" not in fields:
        proc.kill()
        raise SystemExit("server did not start: " + line + proc.stderr.read())
    ports = {"grpc": int(fields["grpc_port"]), "http": int(fields["http_port"])}
    try:
        check_running_server(d, container, ports)
        # Secret update: kubelet writes a new directory and swaps ..data (both keys at once).
        write_secret(mounts["reformer-serve-tls"], secrets["reformer-serve-tls"]("server-b"), 2)
        deadline = time.time() + 30
        while served_subject(d, ports["grpc"]) != "server-b":
            assert time.time() < deadline, "the rotated Secret was not served"
            time.sleep(0.2)
        check_probes(container, ports)
        check_client(d, ports)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
    assert rc == 0, f"exit code {rc}\n{err}"
    assert TOKEN not in err, "a token was logged"
    print("OK: probes, mTLS + token, Secret rotation, SIGTERM")


def check_probes(container, ports):
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == ports["http"], f"{probe} is not on the HTTP port"
        status = http_get(port, get["path"])
        assert status == 200, f"{probe} {get['path']}: {status}"


def check_running_server(d, container, ports):
    startup = container["startupProbe"]["httpGet"]
    deadline = time.time() + 120
    while http_get(ports["http"], startup["path"]) != 200:
        assert time.time() < deadline, "the startup probe never passed"
        time.sleep(0.1)
    check_probes(container, ports)
    assert http_get(ports["http"], "/metrics") == 200
    assert http_get(ports["http"], "/v2") == 403, "the REST API must be off beside TLS"
    # What a native gRPC probe would do: plaintext grpc.health.v1 on the TLS-only port fails.
    import reformer_test_health_pb2 as health_pb2
    import reformer_test_health_pb2_grpc as health_grpc
    with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as ch:
        try:
            health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=5)
            raise AssertionError("a plaintext gRPC health check passed on the TLS port")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
    assert served_subject(d, ports["grpc"]) == "server-a"
    check_client(d, ports)


def check_client(d, ports):
    import grpc_service_pb2 as pb
    import grpc_service_pb2_grpc as pbg
    creds = grpc.ssl_channel_credentials(root_certificates=st.read(os.path.join(d, "server-ca.pem")),
                                         private_key=st.read(os.path.join(d, "client-good.key")),
                                         certificate_chain=st.read(os.path.join(d, "client-good.pem")))
    ids = np.arange(1, 9, dtype=np.int64).reshape(1, 8)
    request = pb.ModelInferRequest(
        model_name="f1_mixed_causal_multihash_rightpad",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=[1, 8])],
        raw_input_contents=[ids.tobytes()])
    with grpc.secure_channel(f"localhost:{ports['grpc']}", creds) as ch:
        stub = pbg.GRPCInferenceServiceStub(ch)
        stub.ModelInfer(request, metadata=[("authorization", "Bearer " + TOKEN)], timeout=60)
        try:
            stub.ModelInfer(request, timeout=60)
            raise AssertionError("a call without a token was served")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e


if __name__ == "__main__":
    main()
