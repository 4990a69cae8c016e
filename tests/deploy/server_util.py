"""Helpers for the deploy tests that run real reformer-server processes (Debian's /usr/bin/python3, python3-grpcio).

start_server() spawns the server on loopback with ports 0 and reads the ports from its first stdout line;
generate_stubs() compiles the project's KServe proto and grpc-proto's health.proto into a directory.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request


def generate_stubs(source_dir, out_dir):
    from grpc_tools import protoc
    proto = os.path.join(source_dir, "proto")
    if protoc.main(["protoc", "-I" + proto, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                    os.path.join(proto, "grpc_service.proto")]) != 0:
        raise RuntimeError("protoc failed for proto/grpc_service.proto")
    # grpc.health.v1 from the Debian package grpc-proto, as module deploy_test_health_pb2: generated as
    # grpc/health/v1/health_pb2.py it would be shadowed by the installed `grpc` package. The wire names come
    # from the proto's package line and are unchanged.
    src = "/usr/share/grpc-proto/grpc/health/v1/health.proto"
    if not os.path.exists(src):
        raise RuntimeError(f"{src} is missing (Debian package grpc-proto, scripts/install-deps.sh)")
    shutil.copy(src, os.path.join(out_dir, "deploy_test_health.proto"))
    if protoc.main(["protoc", "-I" + out_dir, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                    os.path.join(out_dir, "deploy_test_health.proto")]) != 0:
        raise RuntimeError("protoc failed for grpc/health/v1/health.proto")
    sys.path.insert(0, out_dir)


class Server:
    """A reformer-server process; `env` replaces the environment's REFORMER_* variables when given."""

    def __init__(self, binary, args=(), env=None):
        base = {k: v for k, v in os.environ.items() if not k.startswith("REFORMER_")} if env is not None else dict(os.environ)
        self.proc = subprocess.Popen([binary, "--grpc_port", "0", "--http_port", "0", "--bind_address", "127.0.0.1"]
                                     + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(base, **(env or {})))
        line = self.proc.stdout.readline()
        ports = dict(re.findall(r"(\w+)=(\S+)", line))
        if "grpc_port" not in ports:
            self.proc.kill()
            raise RuntimeError("server did not start: " + line + self.proc.stderr.read())
        self.grpc_port, self.http_port = int(ports["grpc_port"]), int(ports["http_port"])
        self.model = ports.get("model")

    def http_get(self, path, timeout=10):
        """(status, body) of GET http://127.0.0.1:<http_port><path>."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.http_get("/v2/health/ready", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready in time")

    def counter(self, name, **labels):
        """Sum of a Prometheus counter's samples with these labels (0 when absent), read from /metrics."""
        status, text = self.http_get("/metrics")
        assert status == 200, status
        total = 0.0
        for m in re.finditer(r"^" + re.escape(name) + r"\{([^}]*)\} (\S+)$", text, re.M):
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def stop(self, timeout=60):
        """SIGTERM, then the exit code (SIGKILL and -1 after the timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -1
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc
