"""reformer-server started and stopped for a Python test (tests/python/*_test.py import this module).

Server(binary, model_dir, *flags, env=None) starts the server on loopback with --grpc_port 0 and --http_port 0
(and --model_dir unless model_dir is None, for a test that sets REFORMER_MODEL_DIR in `env`). `env` is added to
os.environ, or to `base_env` when given (a test that must not inherit some variables passes its own).
The server
it picks free ports and prints them, with the model's name, on its first stdout line (server/main.cc), which
is read here. A thread keeps reading stderr into `stderr` (a list of lines), so the server never blocks
writing a log line and a test can show the tail. The constructor returns once GET /readyz answers 200 (the
same health state as /v2/health/ready and gRPC ServerReady). stop() is SIGTERM and the exit code; kill()
ends it at once (tear-down). `proc` stays public for tests that signal the server themselves.
Subclasses add the clients their test needs.

Also shared: generate_stubs() (the project's protos compiled for grpcio), proc_status()/reset_peak() (a
process's RSS and peak RSS from /proc), read_response() (one HTTP/1.1 response read from a raw socket) and
run_tests() (unittest.main where a skip or a missing test fails). ServerTestCase is a test class whose tests
share one server and one gRPC channel to it.
"""
import http.client
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

READY_TIMEOUT_S = 120


class Server:
    def __init__(self, binary, model_dir, *flags, env=None, base_env=None, ready_timeout=READY_TIMEOUT_S):
        model_flags = [] if model_dir is None else ["--model_dir", model_dir]
        self.proc = subprocess.Popen(
            [binary, *model_flags, "--grpc_port", "0", "--http_port", "0", "--bind_address", "127.0.0.1", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=None if env is None and base_env is None else dict(os.environ if base_env is None else base_env,
                                                                   **(env or {})))
        line = self.proc.stdout.readline()
        if "grpc_port=" not in line:
            self.proc.kill()
            raise RuntimeError("server did not start: " + line + self.proc.stderr.read())
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        self.grpc_port = int(fields["grpc_port"])
        self.http_port = int(fields["http_port"])
        self.model = fields["model"]
        self.pid = self.proc.pid
        self.stderr = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.wait_ready(ready_timeout)

    def _read_stderr(self):
        for line in self.proc.stderr:  # line by line: a test may look at the log while the server runs
            self.stderr.append(line)

    def http_status(self, path, timeout=5):
        """The status of GET `path` on the HTTP port; None when the connection fails."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        deadline = time.time() + timeout
        while self.http_status("/readyz") != 200:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode} before it was ready:\n{self.stderr_tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"server not ready after {timeout} s:\n{self.stderr_tail()}")
            time.sleep(0.05)

    def stderr_tail(self, lines=20):
        return "".join(self.stderr[-lines:])

    def stop(self, timeout=60):
        """SIGTERM, then the exit code once the server has drained and exited (at once when it already has).
        A server still running after `timeout` seconds is killed and subprocess.TimeoutExpired raised."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self):
        """Closes the pipes of a server that has exited (stderr once the reader has seen all of it)."""
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        if not self._reader.is_alive():
            self.proc.stderr.close()


def generate_stubs(source, out_dir, *protos):
    """Python modules for proto/<protos> (grpc_tools' protoc) in out_dir, which joins sys.path."""
    from grpc_tools import protoc
    proto_dir = os.path.join(source, "proto")
    if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                    *(os.path.join(proto_dir, p) for p in protos)]) != 0:
        raise RuntimeError("protoc failed for " + ", ".join(protos))
    sys.path.insert(0, out_dir)


def read_response(sock, timeout=30):
    """One HTTP/1.1 response read from `sock`: (status, lower-case headers, body, the bytes after it), the body
    by Content-Length or de-chunked (Transfer-Encoding: chunked); None when the connection closes before the
    end of the head. A Content-Length body cut short by a close is returned as far as it came; a chunked one
    raises ValueError."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    reader = _Reader(sock, rest)
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while (size := int(reader.line().split(b";")[0], 16)) > 0:
            body += reader.take(size)
            reader.line()  # the CRLF after the chunk
        while reader.line():  # trailer fields, up to the empty line
            pass
    else:
        body = reader.take(int(headers.get("content-length", "0")))
    return status, headers, body, reader.buffer


class _Reader:
    """Bytes from a socket after a response head: lines and counted runs (short ones at EOF)."""

    def __init__(self, sock, buffer):
        self.sock, self.buffer = sock, buffer

    def _fill(self):
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self):
        while b"\r\n" not in self.buffer:
            if not self._fill():
                line, self.buffer = self.buffer, b""
                return line
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def take(self, n):
        while len(self.buffer) < n and self._fill():
            pass
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


class ServerTestCase(unittest.TestCase):
    """Tests sharing one server and one gRPC channel. A subclass's setUpClass calls compile_stubs() and then
    connect(its server); tearDownClass closes the channel, kills the server and removes the stubs' directory
    `tmp` (a subclass that adds to it calls super().tearDownClass()). `grpc` is the grpc module."""

    @classmethod
    def compile_stubs(cls, source, *protos):
        """generate_stubs() into a new temporary directory `tmp`; returns the modules <name>_pb2 and
        <name>_pb2_grpc of each <name>.proto in turn."""
        cls.tmp = tempfile.TemporaryDirectory()
        generate_stubs(source, cls.tmp.name, *protos)
        names = [p[:-len(".proto")] + suffix for p in protos for suffix in ("_pb2", "_pb2_grpc")]
        return [importlib.import_module(n) for n in names]

    @classmethod
    def connect(cls, server, options=None):
        """`server` becomes the class's, with `channel` (insecure, these channel options) to its gRPC port."""
        import grpc
        cls.grpc, cls.server = grpc, server
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.kill()
        cls.tmp.cleanup()


def proc_status(pid, key):
    """A /proc/<pid>/status size in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} for pid {pid}")


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def run_tests(expected):
    """unittest.main (verbose) on the calling script's tests; exits 0 only when all `expected` tests ran and
    passed. A skip counts as a failure here."""
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    skipped = len(result.skipped)
    if skipped:
        print(f"{skipped} tests skipped: a skip counts as a failure here", file=sys.stderr)
    sys.exit(0 if result.wasSuccessful() and not skipped and result.testsRun == expected else 1)
