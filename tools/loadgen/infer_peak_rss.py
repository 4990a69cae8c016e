#!/usr/bin/python3
"""Peak server memory of one large ModelInfer, against the engine's own estimates (issue 11 target:
peak RSS <= idle RSS + the batch's working-memory estimate + 1.3 x the response size). The same
request can go over REST (--protocol rest-binary: binary ids in, binary outputs written from the
response buffers; rest-json: JSON in, JSON streamed out) to show that REST adds no copy either.

Starts reformer-server (one worker) on MODEL_DIR, waits until it is ready and its workers have gone
idle (they return their working memory after 2 s), reads VmRSS (idle), resets VmHWM, sends one
ModelInfer of TOKENS random ids asking for OUTPUTS, reads VmHWM (peak) and prints one JSON line with
the figures and whether the target holds. Exit status 1 when it does not.

  /usr/bin/python3 tools/loadgen/make_random_model.py --out /tmp/cp-random --shape crime-and-punishment
  /usr/bin/python3 tools/loadgen/infer_peak_rss.py --server build/bin/reformer-server \\
      --working_memory build/bin/working_memory --model_dir /tmp/cp-random --tokens 65536 --outputs logits \\
      [--protocol grpc|rest-binary|rest-json]
"""
import http.client
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} for pid {pid}")


def stubs(out_dir):
    from grpc_tools import protoc
    proto = os.path.join(SOURCE, "proto")
    if protoc.main(["protoc", "-I" + proto, "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
                    os.path.join(proto, "grpc_service.proto")]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out_dir)


def grpc_infer(pb, stub, ids, outputs):
    req = pb.ModelInferRequest(model_name="m", id="big")
    req.inputs.add(name="input_ids", datatype="INT32", shape=[1, len(ids)])
    req.raw_input_contents.append(ids.astype("<i4").tobytes())
    for name in outputs.split(","):
        req.outputs.add(name=name)
    resp = stub.ModelInfer(req, timeout=1800)
    return sum(len(r) for r in resp.raw_output_contents)


def rest_infer(port, ids, outputs, binary):
    """One REST infer; the outputs' size in bytes (of the engine's buffers: 4 bytes per value)."""
    body = {"id": "big", "outputs": [{"name": o} for o in outputs.split(",")],
            "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [1, len(ids)]}]}
    headers = {"Content-Type": "application/json"}
    tail = b""
    if binary:
        tail = ids.astype("<i4").tobytes()
        body["inputs"][0]["parameters"] = {"binary_data_size": len(tail)}
        body["parameters"] = {"binary_data_output": True}
    else:
        body["inputs"][0]["data"] = ids.tolist()
    head = json.dumps(body).encode()
    if binary:
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800)
    conn.request("POST", "/v2/models/m/infer", body=head + tail, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {raw[:300]}")
    json_length = int(resp.getheader("Inference-Header-Content-Length", len(raw)))
    doc = json.loads(raw[:json_length])
    total = 0
    for o in doc["outputs"]:
        n = 4
        for d in o["shape"]:
            n *= d
        total += n
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--working_memory", required=True, help="the working_memory helper binary")
    p.add_argument("--model_dir", required=True)
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--outputs", default="logits")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--protocol", choices=("grpc", "rest-binary", "rest-json"), default="grpc")
    args = p.parse_args()

    estimate = json.loads(subprocess.run([args.working_memory, args.model_dir, str(args.tokens), args.outputs],
                                         check=True, capture_output=True, text=True).stdout)
    tmp = tempfile.TemporaryDirectory()
    stubs(tmp.name)
    import grpc
    import grpc_service_pb2 as pb
    import grpc_service_pb2_grpc as pbg

    server = subprocess.Popen([args.server, "--model_dir", args.model_dir, "--model_name", "m", "--grpc_port", "0",
                               "--http_port", "0", "--bind_address", "127.0.0.1", "--workers", "1",
                               "--threads_per_worker", str(args.threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        fields = dict(kv.split("=", 1) for kv in server.stdout.readline().split() if "=" in kv)
        channel = grpc.insecure_channel(f"127.0.0.1:{fields['grpc_port']}",
                                        options=[("grpc.max_receive_message_length", 1 << 31 - 1)])
        stub = pbg.GRPCInferenceServiceStub(channel)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        time.sleep(3)  # the worker returns the warm-up's working memory after 2 s idle
        idle = proc_status(server.pid, "VmRSS")
        with open(f"/proc/{server.pid}/clear_refs", "w") as f:
            f.write("5")
        ids = np.random.default_rng(1).integers(2, 258, size=args.tokens, dtype=np.int32)
        start = time.time()
        if args.protocol == "grpc":
            response_bytes = grpc_infer(pb, stub, ids, args.outputs)
        else:
            response_bytes = rest_infer(int(fields["http_port"]), ids, args.outputs, args.protocol == "rest-binary")
        seconds = time.time() - start
        peak = proc_status(server.pid, "VmHWM")
        bound = idle + estimate["working_bytes"] + 1.3 * response_bytes
        mib = lambda b: round(b / 2**20, 1)
        result = {"protocol": args.protocol, "tokens": args.tokens, "outputs": args.outputs,
                  "seconds": round(seconds, 2),
                  "idle_rss_mib": mib(idle), "peak_rss_mib": mib(peak), "growth_mib": mib(peak - idle),
                  "working_estimate_mib": mib(estimate["working_bytes"]), "response_mib": mib(response_bytes),
                  "bound_mib": mib(bound), "growth_over_response": round((peak - idle - estimate["working_bytes"])
                                                                         / response_bytes, 3),
                  "target_met": peak <= bound}
        print(json.dumps(result))
        channel.close()
        return 0 if result["target_met"] else 1
    finally:
        server.terminate()
        server.wait(timeout=60)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
