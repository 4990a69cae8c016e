#!/usr/bin/python3
"""Probe and /metrics latency while REST inference saturates the HTTP port (issue 13: HTTP handler threads
block during inference; the server keeps --http_threads - --http_infer_threads of them for everything else).

Starts reformer-server on MODEL_DIR with its default HTTP threads (128, 96 of them for inference) unless told
otherwise, then runs CLIENTS closed-loop REST clients on kept-alive connections, each sending a slow request
(ROWS x TOKENS ids, `embedding` output) again and again for SECONDS, while one prober GETs /readyz, /metrics and
/v2/health/live every 100 ms on fresh connections. Prints one JSON line: answers by status, and the probes'
latency (p50, p99, max) and failures. Timings are from a loaded machine unless taken in a quiet window.

  /usr/bin/python3 tools/loadgen/rest_probe_latency.py --server build/bin/reformer-server \\
      --model_dir models/default --clients 150 --seconds 20
"""
import argparse
import http.client
import json
import subprocess
import sys
import threading
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--clients", type=int, default=150)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--server_args", default="--workers 2 --threads_per_worker 1",
                   help="extra reformer-server flags (e.g. '--http_threads 64')")
    args = p.parse_args()

    server = subprocess.Popen([args.server, "--model_dir", args.model_dir, "--grpc_port", "0", "--http_port", "0",
                               "--bind_address", "127.0.0.1"] + args.server_args.split(),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        fields = dict(kv.split("=", 1) for kv in server.stdout.readline().split() if "=" in kv)
        port, model = int(fields["http_port"]), fields["model"]
        wait_ready(port)
        ids = [[(7 * i + r) % 250 + 1 for i in range(args.tokens)] for r in range(args.rows)]
        body = json.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [args.rows, args.tokens],
                                       "data": ids}], "outputs": [{"name": "embedding"}]})
        stop = time.time() + args.seconds
        statuses, lock = {}, threading.Lock()
        clients = [threading.Thread(target=client, args=(port, model, body, stop, statuses, lock))
                   for _ in range(args.clients)]
        for t in clients:
            t.start()
        probes = probe(port, stop)
        for t in clients:
            t.join()
        lat = sorted(probes["latencies"])
        q = lambda f: round(1000 * lat[min(len(lat) - 1, int(f * len(lat)))], 1) if lat else None
        print(json.dumps({"clients": args.clients, "seconds": args.seconds, "request": f"{args.rows}x{args.tokens} ids",
                          "answers": statuses, "probes": len(lat), "probe_failures": probes["failures"],
                          "probe_ms_p50": q(0.5), "probe_ms_p99": q(0.99),
                          "probe_ms_max": round(1000 * lat[-1], 1) if lat else None}))
        return 0 if probes["failures"] == 0 and lat else 1
    finally:
        server.terminate()
        server.wait(timeout=120)


def wait_ready(port):
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v2/health/ready")
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready")


def client(port, model, body, stop, statuses, lock):
    conn = None
    while time.time() < stop:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
            if status == 503:
                time.sleep(float(resp.getheader("Retry-After", "1")) / 10)  # an eager client
        except OSError as e:
            status = type(e).__name__
            conn = None
        with lock:
            statuses[str(status)] = statuses.get(str(status), 0) + 1


def probe(port, stop):
    out = {"latencies": [], "failures": 0}
    while time.time() < stop:
        for path in ("/readyz", "/metrics", "/v2/health/live"):
            start = time.time()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", path)
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            if ok:
                out["latencies"].append(time.time() - start)
            else:
                out["failures"] += 1
        time.sleep(0.1)
    return out


if __name__ == "__main__":
    sys.exit(main())
