#!/usr/bin/python3
"""Smoke checks against a running reformer-server, with a real gRPC client (Debian's python3-grpcio).

Used by deploy/test-image.sh (the container image test) and by the Prometheus ingestion test
(tests/deploy/prometheus_ingestion_test.py imports it for its traffic):

  /usr/bin/python3 deploy/smoke_client.py --grpc 127.0.0.1:8001 --http 127.0.0.1:8000 \
      --model-name default --max-id 257 [--wait 120]

Checks, in order: grpc.health.v1 Check reports SERVING for "", "liveness" and "readiness" (waiting up to --wait
seconds for the model to load); KServe v2 ServerLive/ServerReady/ModelReady; a ModelInfer with raw INT64
input_ids answers token_logprobs of the right shape with finite values; GET /metrics serves the reformer_* metrics.
Prints one line per check with its time; exit 0 when all pass. Loopback targets only.
"""

import argparse
import importlib
import ipaddress
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import urllib.request

import grpc
from grpc_tools import protoc

HEALTH_PROTO_DIR = "/usr/share/grpc-proto"  # Debian package grpc-proto
HEALTH_PROTO = "grpc/health/v1/health.proto"
SAMPLE_TEXT = ("And God said, Let there be light: and there was light. And God saw the light, that it was good: "
               "and God divided the light from the darkness. ")


def load_stubs(source_dir, out_dir=None):
    """Generates Python modules for the project's KServe proto and grpc.health.v1 into a temp dir and imports them.

    Returns a namespace dict with pb2 / pb2_grpc modules: kserve, kserve_grpc, health, health_grpc.
    """
    out_dir = out_dir or tempfile.mkdtemp(prefix="reformer-stubs-")
    proto_dir = os.path.join(source_dir, "proto")
    # health.proto is compiled from a copy at the top level: generated as grpc/health/v1/health_pb2.py it would be
    # shadowed by the grpc package itself. The proto package (grpc.health.v1) and so the service name are unchanged.
    health_dir = os.path.join(out_dir, "health_proto")
    os.makedirs(health_dir, exist_ok=True)
    shutil.copy(os.path.join(HEALTH_PROTO_DIR, HEALTH_PROTO), os.path.join(health_dir, "reformer_health.proto"))
    grpc_tools_include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    for include, proto in ((proto_dir, "grpc_service.proto"), (health_dir, "reformer_health.proto")):
        args = ["protoc", f"-I{include}", f"-I{grpc_tools_include}", f"--python_out={out_dir}",
                f"--grpc_python_out={out_dir}", os.path.join(include, proto)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
    sys.path.insert(0, out_dir)
    return {
        "kserve": importlib.import_module("grpc_service_pb2"),
        "kserve_grpc": importlib.import_module("grpc_service_pb2_grpc"),
        "health": importlib.import_module("reformer_health_pb2"),
        "health_grpc": importlib.import_module("reformer_health_pb2_grpc"),
    }

def require_loopback(target):
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"smoke_client: refusing non-loopback target {target}")


def wait_serving(stubs, channel, services, timeout_s):
    """Polls grpc.health.v1 Check until every service is SERVING; returns seconds waited."""
    health = stubs["health_grpc"].HealthStub(channel)
    serving = stubs["health"].HealthCheckResponse.SERVING
    start = time.monotonic()
    last = None
    while True:
        try:
            statuses = {s: health.Check(stubs["health"].HealthCheckRequest(service=s), timeout=2).status
                        for s in services}
            if all(v == serving for v in statuses.values()):
                return time.monotonic() - start
            last = statuses
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"health not SERVING after {timeout_s} s (last: {last})")
        time.sleep(0.25)


def infer_request(stubs, model_name, ids_rows, outputs=("token_logprobs",), request_id=""):
    """A ModelInfer request with raw INT64 input_ids [B, T] (rows of equal length)."""
    pb = stubs["kserve"]
    req = pb.ModelInferRequest(model_name=model_name, id=request_id)
    t = len(ids_rows[0])
    tensor = req.inputs.add(name="input_ids", datatype="INT64", shape=[len(ids_rows), t])
    del tensor  # the shape is all the tensor needs; data goes raw
    req.raw_input_contents.append(b"".join(struct.pack(f"<{t}q", *row) for row in ids_rows))
    for o in outputs:
        req.outputs.add(name=o)
    return req


def check_logprobs(resp, rows, t):
    """Checks a ModelInfer answer for token_logprobs [rows, t]: FP32, finite, <= 0, first token 0."""
    names = [o.name for o in resp.outputs]
    if "token_logprobs" not in names:
        raise RuntimeError(f"ModelInfer answered outputs {names}, no token_logprobs")
    i = names.index("token_logprobs")
    out = resp.outputs[i]
    if out.datatype != "FP32" or list(out.shape) != [rows, t]:
        raise RuntimeError(f"token_logprobs is {out.datatype} {list(out.shape)}, want FP32 [{rows}, {t}]")
    raw = resp.raw_output_contents[i]
    values = struct.unpack(f"<{rows * t}f", raw)
    if not all(math.isfinite(v) and v <= 1e-6 for v in values):
        raise RuntimeError("token_logprobs has non-finite or positive values")
    return values


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grpc", required=True, help="host:port of the gRPC port (loopback)")
    ap.add_argument("--http", required=True, help="host:port of the HTTP port (loopback)")
    ap.add_argument("--model-name", default="default")
    ap.add_argument("--max-id", type=int, default=257, help="largest token id to send (vocab_size - 1)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per row")
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait for SERVING")
    ap.add_argument("--source-dir", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    require_loopback(args.grpc)
    require_loopback(args.http)

    stubs = load_stubs(args.source_dir)
    channel = grpc.insecure_channel(args.grpc)
    waited = wait_serving(stubs, channel, ["", "liveness", "readiness"], args.wait)
    print(f"smoke: health SERVING for '', liveness, readiness after {waited:.1f} s")

    kserve = stubs["kserve_grpc"].GRPCInferenceServiceStub(channel)
    pb = stubs["kserve"]
    live = kserve.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    ready = kserve.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    model_ready = kserve.ModelReady(pb.ModelReadyRequest(name=args.model_name), timeout=5).ready
    if not (live and ready and model_ready):
        raise SystemExit(f"smoke: FAIL ServerLive={live} ServerReady={ready} ModelReady({args.model_name})={model_ready}")
    print(f"smoke: ServerLive, ServerReady, ModelReady({args.model_name}) true")

    if args.max_id >= 257:  # byte-level vocabulary (id = byte + 2): score real English text
        text = (SAMPLE_TEXT * (1 + args.tokens // len(SAMPLE_TEXT))).encode()
        rows = [[b + 2 for b in text[r * 7:r * 7 + args.tokens]] for r in range(2)]
    else:  # a small test vocabulary: any valid ids
        rows = [[1 + (7 * i + 3 * r) % args.max_id for i in range(args.tokens)] for r in range(2)]
    start = time.monotonic()
    resp = kserve.ModelInfer(infer_request(stubs, args.model_name, rows, request_id="smoke-1"), timeout=120)
    elapsed = time.monotonic() - start
    values = check_logprobs(resp, len(rows), args.tokens)
    if resp.id != "smoke-1":
        raise SystemExit(f"smoke: FAIL response id {resp.id!r} != 'smoke-1'")
    total = sum(values)
    print(f"smoke: ModelInfer 2x{args.tokens} tokens -> token_logprobs [2, {args.tokens}], "
          f"sum {total:.2f} nats ({-total / math.log(2) / (2 * (args.tokens - 1)):.3f} bits/token{' of English text' if args.max_id >= 257 else ''}) in {elapsed:.2f} s")

    status, text = http_get(f"http://{args.http}/metrics")
    needed = ["reformer_requests_total", "reformer_request_duration_seconds_bucket", "reformer_queue_tokens",
              "reformer_build_info", "grpc_server_handled_total"]
    missing = [m for m in needed if m not in text]
    ok_line = [l for l in text.splitlines() if l.startswith("reformer_requests_total") and 'code="OK"' in l]
    if status != 200 or missing or not ok_line:
        raise SystemExit(f"smoke: FAIL /metrics status {status}, missing {missing}, OK requests line {ok_line}")
    print(f"smoke: /metrics serves {len(text.splitlines())} lines; {ok_line[0]}")
    for path in ("/healthz", "/readyz"):
        status, _ = http_get(f"http://{args.http}{path}")
        if status != 200:
            raise SystemExit(f"smoke: FAIL GET {path} -> {status}")
    print("smoke: /healthz and /readyz 200")
    print("smoke: all checks passed")


if __name__ == "__main__":
    main()
