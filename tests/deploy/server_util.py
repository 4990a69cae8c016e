"""Helpers for the deploy tests that run real reformer-server processes (Debian's /usr/bin/python3, python3-grpcio).

Server is tests/python/server_harness.py's (ports 0 on loopback, started once /readyz answers, stderr read
as it comes) with the deploy tests' rules: the arguments are a list and carry --model_dir themselves (or
REFORMER_MODEL_DIR does), `env` replaces the environment's REFORMER_* variables, and stop() returns -1 for a
server that had to be killed. generate_stubs() compiles the project's KServe proto and grpc-proto's
health.proto into a directory.
"""
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import server_harness  # noqa: E402


def generate_stubs(source_dir, out_dir):
    server_harness.generate_stubs(source_dir, out_dir, "grpc_service.proto")
    # grpc.health.v1 from the Debian package grpc-proto, as module deploy_test_health_pb2: generated as
    # grpc/health/v1/health_pb2.py it would be shadowed by the installed `grpc` package. The wire names come
    # from the proto's package line and are unchanged.
    from grpc_tools import protoc
    src = "/usr/share/grpc-proto/grpc/health/v1/health.proto"
    if not os.path.exists(src):
        raise RuntimeError(f"{src} is missing (Debian package grpc-proto, scripts/install-deps.sh)")
    shutil.copy(src, os.path.join(out_dir, "deploy_test_health.proto"))
    if protoc.main(["protoc", "-I" + out_dir, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                    os.path.join(out_dir, "deploy_test_health.proto")]) != 0:
        raise RuntimeError("protoc failed for grpc/health/v1/health.proto")


class Server(server_harness.Server):
    """A reformer-server process; `env` replaces the environment's REFORMER_* variables when given."""

    def __init__(self, binary, args=(), env=None):
        base = None if env is None else {k: v for k, v in os.environ.items() if not k.startswith("REFORMER_")}
        super().__init__(binary, None, *args, env=env, base_env=base)

    def http_get(self, path, timeout=10):
        """(status, body) of GET http://127.0.0.1:<http_port><path>."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

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
        try:
            return super().stop(timeout)
        except subprocess.TimeoutExpired:
            return -1
