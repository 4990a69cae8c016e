#!/usr/bin/python3
"""A real Prometheus scrapes a real reformer-server; everything deploy/monitoring ships is evaluated against it.

  prometheus_ingestion_test.py --server build/bin/reformer-server [--model-dir DIR] [--prometheus PATH]

1. Starts reformer-server on free loopback ports with a small model (a test fixture by default) and waits until
   it is SERVING.
2. Starts Prometheus (Debian package `prometheus`) on loopback with deploy/monitoring/prometheus.yml, retargeted:
   scrape and rule evaluation every second, the server's HTTP port as target, namespace/pod target labels as the
   ServiceMonitor would add them, the shipped alert rules loaded.
3. Sends gRPC traffic in the background (valid ModelInfer requests and some invalid ones) while querying.
4. Asserts through Prometheus's HTTP API: the scrape is up; every metric family of the issue was ingested; every
   dashboard panel and variable query and the prometheus-adapter queries evaluate without error to a non-empty
   result with a finite value; the alert rules loaded and evaluate with health "ok" and none is firing.
Exit 0 on success, 1 on failure, 77 (skip) when prometheus is not installed.
"""

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import grpc
import yaml

SRC = os.environ.get("REFORMER_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "deploy"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smoke_client  # noqa: E402  (deploy/smoke_client.py)
import monitoring_queries  # noqa: E402

JOB = "reformer-serve"
NAMESPACE = "deploy-test"
POD = "reformer-serve-test-0"
# Metric families the issue names; histograms are checked through their _bucket series.
EXPECTED_METRICS = [
    "reformer_requests_total", "reformer_request_duration_seconds_bucket", "reformer_queue_duration_seconds_bucket",
    "reformer_batch_size_bucket", "reformer_batch_tokens_bucket", "reformer_input_tokens_bucket",
    "reformer_queue_requests", "reformer_queue_tokens", "reformer_inflight_requests", "reformer_rejected_total",
    "reformer_workspace_bytes", "reformer_tokens_processed_total", "reformer_build_info",
    "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failures:
    def __init__(self):
        self.items = []

    def check(self, ok, msg):
        if not ok:
            self.items.append(msg)
            log(f"FAIL {msg}")
        return ok


def prom_get(base, path, params=None, timeout=10):
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}") or {"status": "error", "error": str(e)}


def finite_values(result):
    vals = []
    for s in result:
        v = s.get("value")
        if v is not None:
            try:
                vals.append(float(v[1]))
            except ValueError:
                pass
    return [v for v in vals if math.isfinite(v)]


def reformer_stubs(out_dir):
    """reformer.v1 (proto/reformer.proto) modules beside the KServe ones smoke_client made in out_dir."""
    import importlib
    from grpc_tools import protoc
    proto_dir = os.path.join(SRC, "proto")
    if protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                    os.path.join(proto_dir, "reformer.proto")]) != 0:
        raise RuntimeError("protoc failed for proto/reformer.proto")
    return {"reformer": importlib.import_module("reformer_pb2"),
            "reformer_grpc": importlib.import_module("reformer_pb2_grpc")}


def traffic(stubs, grpc_target, model_name, max_id, stop, counts):
    """Closed-loop traffic until stop is set: mostly valid requests of varying length, every 5th invalid."""
    channel = grpc.insecure_channel(grpc_target)
    stub = stubs["kserve_grpc"].GRPCInferenceServiceStub(channel)
    i = 0
    while not stop.is_set():
        i += 1
        t = 16 + (i * 37) % 112
        rows = [[1 + (j * 13 + i) % max_id for j in range(t)]]
        if i % 5 == 0:
            rows = [[max_id + 1000] * t]  # token id out of range -> InvalidArgument
        try:
            if i % 4 == 1:  # reformer.v1 Generate (the generation row of the dashboard)
                v1 = stubs["reformer"]
                req = v1.GenerateRequest(prompt=v1.Document(ids=v1.TokenIds(ids=rows[0][:8])), max_new_tokens=8)
                list(stubs["reformer_grpc"].ReformerServiceStub(channel).Generate(req, timeout=30))
                counts["generate"] = counts.get("generate", 0) + 1
                continue
            stub.ModelInfer(smoke_client.infer_request(stubs, model_name, rows, request_id=f"r{i}"), timeout=30)
            counts["ok"] += 1
        except grpc.RpcError as e:
            counts[e.code().name] = counts.get(e.code().name, 0) + 1
        time.sleep(0.05)
    channel.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--model-dir", default=os.path.join(SRC, "tests/fixtures/f1_mixed_causal_multihash_rightpad"))
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(args.prometheus):
        print("SKIP: prometheus not installed (Debian package prometheus)")
        return 77

    tmp = tempfile.mkdtemp(prefix="reformer-prom-test-")
    procs = []
    stop = threading.Event()
    fails = Failures()
    try:
        with open(os.path.join(args.model_dir, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        model_name = "deploytest"

        # 1. reformer-server.
        grpc_port, http_port = free_port(), free_port()
        server_log = open(os.path.join(tmp, "server.log"), "w")
        server = subprocess.Popen(
            [args.server, "--bind_address=127.0.0.1", f"--model_dir={args.model_dir}", f"--model_name={model_name}", f"--grpc_port={grpc_port}",
             f"--http_port={http_port}", "--workers=1", "--threads_per_worker=2"],
            stdout=server_log, stderr=subprocess.STDOUT)
        procs.append(server)
        stubs = smoke_client.load_stubs(SRC, os.path.join(tmp, "stubs"))
        stubs.update(reformer_stubs(os.path.join(tmp, "stubs")))
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        waited = smoke_client.wait_serving(stubs, channel, ["", "readiness"], 60)
        log(f"reformer-server SERVING after {waited:.1f} s (gRPC {grpc_port}, HTTP {http_port})")

        # 2. Prometheus with the shipped config, retargeted.
        with open(os.path.join(SRC, "deploy/monitoring/prometheus.yml")) as f:
            cfg = yaml.safe_load(f)
        cfg["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
        cfg["rule_files"] = [os.path.join(SRC, "deploy/monitoring", r) for r in cfg.get("rule_files", [])]
        jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == JOB]
        if not fails.check(len(jobs) == 1, f"prometheus.yml has no scrape job {JOB}"):
            return 1
        jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{http_port}"],
                                      "labels": {"namespace": NAMESPACE, "pod": POD}}]
        cfg_path = os.path.join(tmp, "prometheus.yml")
        with open(cfg_path, "w") as f:
            yaml.safe_dump(cfg, f)
        prom_port = free_port()
        prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
        prom = subprocess.Popen(
            [args.prometheus, f"--config.file={cfg_path}", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=prom_log, stderr=subprocess.STDOUT)
        procs.append(prom)
        base = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or prom.poll() is not None:
                log("Prometheus did not become ready")
                return 1
            time.sleep(0.25)
        log(f"Prometheus ready on 127.0.0.1:{prom_port}")

        # 3. Traffic in the background.
        counts = {"ok": 0}
        thread = threading.Thread(target=traffic, args=(stubs, f"127.0.0.1:{grpc_port}", model_name, vocab - 1,
                                                         stop, counts), daemon=True)
        thread.start()

        # 4a. Scrape up and the request rate visible (two scrapes after traffic started).
        deadline = time.monotonic() + 60
        while True:
            up = prom_get(base, "/api/v1/query", {"query": f'up{{job="{JOB}"}}'})
            rate = prom_get(base, "/api/v1/query",
                            {"query": f'sum(rate(reformer_requests_total{{job="{JOB}",code="OK"}}[1m]))'})
            ok_up = up.get("status") == "success" and finite_values(up["data"]["result"]) == [1.0]
            rate_vals = finite_values(rate.get("data", {}).get("result", []))
            if ok_up and rate_vals and rate_vals[0] > 0 and counts.get("INVALID_ARGUMENT", 0) > 0:
                break
            if time.monotonic() > deadline:
                fails.check(False, f"scrape not up or no request rate after 60 s: up={up} rate={rate} counts={counts}")
                return 1
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes so every histogram window holds observations
        log(f"scrape up; traffic so far {counts}")

        # 4b. Every expected metric family ingested, with the target labels.
        names = set(prom_get(base, "/api/v1/label/__name__/values",
                             {"match[]": f'{{job="{JOB}",namespace="{NAMESPACE}",pod="{POD}"}}'})["data"])
        missing = [m for m in EXPECTED_METRICS if m not in names]
        fails.check(not missing, f"metrics not ingested: {missing}")
        log(f"{len(names)} metric names ingested; expected {len(EXPECTED_METRICS)} families present: {not missing}")

        # 4c. Dashboard + adapter queries evaluate to non-empty, finite results.
        queries = (monitoring_queries.dashboard_queries(SRC, rate_interval="30s", namespace=NAMESPACE, job=JOB) +
                   monitoring_queries.adapter_queries(SRC, label_matchers=f'namespace="{NAMESPACE}",pod=~"{POD}"',
                                                      group_by="pod"))
        for name, expr in queries:
            if name.endswith("seriesQuery"):
                r = prom_get(base, "/api/v1/series", {"match[]": expr})
                ok = fails.check(r.get("status") == "success" and len(r.get("data", [])) > 0,
                                 f"{name}: {expr} -> {r}")
                log(f"{'ok  ' if ok else 'FAIL'} {name}: {len(r.get('data', []))} series")
                continue
            r = prom_get(base, "/api/v1/query", {"query": expr})
            result = r.get("data", {}).get("result", []) if r.get("status") == "success" else []
            vals = finite_values(result)
            ok = fails.check(r.get("status") == "success" and len(result) > 0 and len(vals) > 0,
                             f"{name}: {expr} -> status {r.get('status')} {r.get('error', '')} "
                             f"{len(result)} series, finite values {vals}")
            if name.startswith("adapter") and "metricsQuery" in name:
                fails.check(all(s["metric"].get("pod") == POD for s in result),
                            f"{name}: result not keyed by pod: {result}")
            log(f"{'ok  ' if ok else 'FAIL'} {name}: {len(result)} series, e.g. {vals[:2]}")

        # 4d. Alert rules loaded, evaluated without error, none firing on a healthy server.
        time.sleep(2)
        rules = prom_get(base, "/api/v1/rules")
        loaded = [r for g in rules["data"]["groups"] for r in g["rules"] if r["type"] == "alerting"]
        with open(os.path.join(SRC, "deploy/monitoring/alerts.yml")) as f:
            want = [r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
        fails.check(sorted(r["name"] for r in loaded) == sorted(want),
                    f"alert rules loaded {[r['name'] for r in loaded]} != {want}")
        for r in loaded:
            ok = fails.check(r.get("health") == "ok" and r.get("lastEvaluation", "").startswith("20"),
                             f"alert {r['name']}: health {r.get('health')} {r.get('lastError', '')}")
            fails.check(r.get("state") == "inactive", f"alert {r['name']} is {r.get('state')} on a healthy server")
            log(f"{'ok  ' if ok else 'FAIL'} alert {r['name']}: health {r.get('health')}, state {r.get('state')}")

        stop.set()
        thread.join(timeout=35)
        log(f"traffic sent: {counts}")

        # The server stops cleanly on SIGTERM (what Kubernetes and podman send).
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=15)
            fails.check(rc == 0, f"reformer-server exited {rc} after SIGTERM")
        except subprocess.TimeoutExpired:
            fails.check(False, "reformer-server still running 15 s after SIGTERM")
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if fails.items:
            for name in ("server.log", "prometheus.log"):
                path = os.path.join(tmp, name)
                if os.path.exists(path):
                    with open(path) as f:
                        print(f"--- {name} (tail)\n" + "".join(f.readlines()[-25:]))
        if args.keep_tmp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if fails.items:
        print(f"FAILED: {len(fails.items)} check(s)")
        return 1
    print("PASSED: Prometheus ingested reformer-server's metrics; every dashboard, adapter and alert query evaluates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
