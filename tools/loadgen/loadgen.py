#!/usr/bin/python3
"""Closed-loop load generator for reformer-server (KServe v2 ModelInfer over gRPC).

N concurrent clients each send one request, wait for the answer, and send the next, until
--requests answers have been received or --duration seconds have passed (both bounds always apply).
Each request is one document of random token ids whose length is drawn from --lengths:
  "512"            every document 512 tokens
  "512-16384"      uniform in [512, 16384]
  "512,4096,16384" one of the listed lengths, uniformly
Only loopback targets are accepted (127.0.0.0/8, ::1, localhost).

Optionally one extra client (--background-long 65536) keeps one long document in flight at a time;
the report then also gives the latency of the short requests that ran entirely while a long
document was in flight ("short-request p99 while a 64K document runs").

Reports throughput (requests/s, tokens/s) and latency p50/p90/p99; --json writes the same as JSON.
Stubs are generated at start-up from the repository's proto/grpc_service.proto with grpc_tools.

Run with Debian's interpreter (it has grpcio and grpc_tools):
  /usr/bin/python3 tools/loadgen/loadgen.py --target 127.0.0.1:8001 --model default \
      --concurrency 16 --lengths 512 --requests 2000 --duration 120
"""

import argparse
import collections
import ipaddress
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_CONCURRENCY = 256
MAX_DURATION_S = 3600
MAX_REQUESTS = 1_000_000


# --------------------------------------------------------------------------- argument helpers
def parse_target(target):
    """Returns (host, port) for "host:port" or "[v6]:port"."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError(f"bad target {target!r}: expected [host]:port")
        port = rest[1:]
    else:
        host, sep, port = target.rpartition(":")
        if not sep:
            raise ValueError(f"bad target {target!r}: expected host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in target {target!r}")
    return host, int(port)


def check_loopback(host, port):
    """Raises ValueError unless every address `host` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve {host!r}: {e}") from e
    addresses = {info[4][0] for info in infos}
    for a in addresses:
        if not ipaddress.ip_address(a.split("%")[0]).is_loopback:
            raise ValueError(
                f"refusing non-loopback target {host} ({', '.join(sorted(addresses))}): "
                "the load generator only targets 127.0.0.1 / ::1")
    return sorted(addresses)


def parse_lengths(spec):
    """Returns a function rng -> length for "N", "A-B" or "A,B,C"."""
    spec = spec.strip()
    if "-" in spec:
        lo, hi = (int(x) for x in spec.split("-", 1))
        if not 1 <= lo <= hi:
            raise ValueError(f"bad length range {spec!r}")
        return (lambda rng: rng.randint(lo, hi)), (lo, hi)
    values = [int(x) for x in spec.split(",")]
    if not values or min(values) < 1:
        raise ValueError(f"bad lengths {spec!r}")
    return (lambda rng: rng.choice(values)), (min(values), max(values))


def percentile(sorted_values, q):
    """Nearest-rank percentile (q in [0, 100]) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies):
    s = sorted(latencies)
    return {
        "count": len(s),
        "p50_ms": None if not s else 1000 * percentile(s, 50),
        "p90_ms": None if not s else 1000 * percentile(s, 90),
        "p99_ms": None if not s else 1000 * percentile(s, 99),
        "max_ms": None if not s else 1000 * s[-1],
        "mean_ms": None if not s else 1000 * sum(s) / len(s),
    }


# --------------------------------------------------------------------------- stubs
def load_stubs(proto_dir):
    from grpc_tools import protoc  # Debian: python3-grpc-tools
    import grpc_tools
    out = tempfile.mkdtemp(prefix="reformer-loadgen-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto_dir, "grpc_service.proto")]
    if os.path.isdir(include):
        args.insert(1, f"-I{include}")
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}/grpc_service.proto")
    sys.path.insert(0, out)
    import grpc_service_pb2  # noqa: E402
    import grpc_service_pb2_grpc  # noqa: E402
    return grpc_service_pb2, grpc_service_pb2_grpc


# --------------------------------------------------------------------------- load
class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = []            # (start, end, tokens)
        self.errors = collections.Counter()
        self.long_calls = []    # (start, end, ok)

    def add(self, start, end, tokens, code):
        with self.lock:
            if code is None:
                self.ok.append((start, end, tokens))
            else:
                self.errors[code] += 1

    def count(self):
        with self.lock:
            return len(self.ok) + sum(self.errors.values())


def make_request(pb2, model, ids, outputs, req_id, timeout_us):
    import struct
    req = pb2.ModelInferRequest(model_name=model, id=req_id)
    t = req.inputs.add()
    t.name = "input_ids"
    t.datatype = "INT32"
    t.shape.extend([1, len(ids)])
    req.raw_input_contents.append(struct.pack(f"<{len(ids)}i", *ids))
    for name in outputs:
        req.outputs.add().name = name
    if timeout_us:
        req.parameters["timeout"].int64_param = timeout_us
    return req


def run(args):
    import grpc
    host, port = parse_target(args.target)
    addresses = check_loopback(host, port)
    pick_length, (_, max_len) = parse_lengths(args.lengths)
    pb2, pb2_grpc = load_stubs(args.proto_dir)
    target = args.target
    options = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]

    # Model facts (name, vocab) from ModelMetadata when available.
    channel = grpc.insecure_channel(target, options=options)
    stub = pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        raise SystemExit(f"loadgen: cannot connect to {target} within {args.connect_timeout}s")
    vocab = args.vocab
    model = args.model
    try:
        md = stub.ModelMetadata(pb2.ModelMetadataRequest(name=model), timeout=10)
        model = model or md.name
        if not vocab and "vocab_size" in md.properties:
            vocab = int(md.properties["vocab_size"])
        context = int(md.properties.get("max_position_embeddings", "0") or 0)
        if context and max_len > context:
            raise SystemExit(f"loadgen: --lengths goes up to {max_len} tokens but the model's context is {context}")
        if args.background_long and context and args.background_long > context:
            raise SystemExit(f"loadgen: --background-long {args.background_long} exceeds the context {context}")
    except grpc.RpcError as e:
        if not model:
            raise SystemExit(f"loadgen: ModelMetadata failed ({e.code().name}); pass --model")
    vocab = vocab or 256
    channel.close()

    outputs = [o for o in args.outputs.split(",") if o]
    timeout_us = int(args.timeout * 1e6) if args.timeout else 0
    rec = Recorder()
    stop = threading.Event()
    t_start = time.monotonic()
    deadline = t_start + args.duration
    sent = [0]
    sent_lock = threading.Lock()

    def take_ticket():
        with sent_lock:
            if sent[0] >= args.requests:
                return False
            sent[0] += 1
            return True

    def client(index):
        rng = random.Random(args.seed * 1000 + index)
        ch = grpc.insecure_channel(target, options=options)
        st = pb2_grpc.GRPCInferenceServiceStub(ch)
        n = 0
        while not stop.is_set() and time.monotonic() < deadline and take_ticket():
            length = pick_length(rng)
            ids = [rng.randrange(vocab) for _ in range(length)]
            req = make_request(pb2, model, ids, outputs, f"c{index}-{n}", timeout_us)
            n += 1
            t0 = time.monotonic()
            code = None
            try:
                st.ModelInfer(req, timeout=max(0.001, min(args.timeout or 3600, deadline + 600 - t0)))
            except grpc.RpcError as e:
                code = e.code().name
            rec.add(t0, time.monotonic(), length, code)
        ch.close()

    def long_client():
        rng = random.Random(args.seed * 1000 + 999)
        ch = grpc.insecure_channel(target, options=options)
        st = pb2_grpc.GRPCInferenceServiceStub(ch)
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            ids = [rng.randrange(vocab) for _ in range(args.background_long)]
            req = make_request(pb2, model, ids, outputs, f"long-{n}", 0)
            n += 1
            t0 = time.monotonic()
            ok = True
            try:
                st.ModelInfer(req, timeout=3600)
            except grpc.RpcError as e:
                ok = False
                print(f"loadgen: background long request failed: {e.code().name} {e.details()}", file=sys.stderr)
            with rec.lock:
                rec.long_calls.append((t0, time.monotonic(), ok))
        ch.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.concurrency)]
    long_thread = None
    if args.background_long:
        long_thread = threading.Thread(target=long_client, daemon=True)
        long_thread.start()
        time.sleep(args.long_head_start)  # let the long document reach a worker first
    t_load = time.monotonic()
    for t in threads:
        t.start()
    last_print = t_load
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if args.progress and time.monotonic() - last_print >= 5:
            last_print = time.monotonic()
            print(f"  ... {rec.count()} answers after {last_print - t_load:.0f}s", file=sys.stderr)
    t_end = time.monotonic()
    stop.set()
    if long_thread is not None:
        long_thread.join(timeout=0 if args.no_wait_long else None)

    ok = rec.ok
    elapsed = max(1e-9, t_end - t_load)
    tokens = sum(t for _, _, t in ok)
    result = {
        "target": target, "addresses": addresses, "model": model,
        "concurrency": args.concurrency, "lengths": args.lengths, "outputs": outputs,
        "elapsed_s": elapsed, "requests_ok": len(ok), "errors": dict(rec.errors),
        "requests_per_s": len(ok) / elapsed, "tokens_per_s": tokens / elapsed, "tokens_ok": tokens,
        "latency": latency_summary([e - s for s, e, _ in ok]),
    }
    if args.dump_lengths:
        with open(args.dump_lengths, "w") as f:
            f.write("".join(f"{t}\n" for _, _, t in ok))
    if args.background_long:
        # Short requests that ran entirely while a long document was in flight.
        spans = [(s, e) for s, e, _ in rec.long_calls]
        during = [e - s for s, e, _ in ok if any(ls <= s and e <= le for ls, le in spans)]
        result["background_long"] = {
            "tokens": args.background_long,
            "long_requests": len(rec.long_calls),
            "long_ok": sum(1 for *_, good in rec.long_calls if good),
            "long_latency_s": [round(e - s, 3) for s, e, _ in rec.long_calls],
            "short_during_long": latency_summary(during),
        }
    return result


def format_report(r):
    lat = r["latency"]

    def ms(v):
        return "-" if v is None else f"{v:.1f}"
    lines = [
        f"target {r['target']} model {r['model']!r}: {r['concurrency']} clients, lengths {r['lengths']}, "
        f"outputs {','.join(r['outputs']) or 'all'}",
        f"  {r['requests_ok']} ok, errors {r['errors'] or 0} in {r['elapsed_s']:.1f}s",
        f"  throughput {r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.0f} tokens/s",
        f"  latency ms: p50 {ms(lat['p50_ms'])}  p90 {ms(lat['p90_ms'])}  p99 {ms(lat['p99_ms'])}  "
        f"max {ms(lat['max_ms'])}",
    ]
    if "background_long" in r:
        b = r["background_long"]
        d = b["short_during_long"]
        lines.append(f"  background {b['tokens']}-token document: {b['long_ok']}/{b['long_requests']} ok, "
                     f"latency s {b['long_latency_s']}")
        lines.append(f"  short requests entirely during it: {d['count']}, ms p50 {ms(d['p50_ms'])}  "
                     f"p90 {ms(d['p90_ms'])}  p99 {ms(d['p99_ms'])}  max {ms(d['max_ms'])}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:8001", help="loopback host:port of the gRPC server")
    p.add_argument("--model", default="", help="model name (default: ModelMetadata of the server's model)")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    p.add_argument("--lengths", default="512", help='document lengths: "512", "512-16384" or "512,4096"')
    p.add_argument("--requests", type=int, default=1000, help="stop after this many answers")
    p.add_argument("--duration", type=float, default=60, help="stop sending after this many seconds")
    p.add_argument("--outputs", default="token_logprobs",
                   help="comma-separated outputs to request (empty = all)")
    p.add_argument("--vocab", type=int, default=0, help="token ids in [0, vocab) (default: from ModelMetadata)")
    p.add_argument("--timeout", type=float, default=0, help="per-request timeout parameter, seconds (0 = none)")
    p.add_argument("--background-long", type=int, default=0,
                   help="also keep one document of this many tokens in flight")
    p.add_argument("--long-head-start", type=float, default=1.0,
                   help="seconds the long document gets before the short clients start")
    p.add_argument("--no-wait-long", action="store_true", help="do not wait for the last long request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--connect-timeout", type=float, default=10)
    p.add_argument("--proto-dir", default=os.path.join(REPO_ROOT, "proto"))
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("--dump-lengths", default="",
                   help="write the lengths of the answered short requests here (for offline_throughput)")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        p.error(f"--concurrency must be in [1, {MAX_CONCURRENCY}]")
    if not 0 < args.duration <= MAX_DURATION_S:
        p.error(f"--duration must be in (0, {MAX_DURATION_S}]")
    if not 1 <= args.requests <= MAX_REQUESTS:
        p.error(f"--requests must be in [1, {MAX_REQUESTS}]")
    try:
        parse_lengths(args.lengths)
        check_loopback(*parse_target(args.target))
    except ValueError as e:
        p.error(str(e))
    result = run(args)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["requests_ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
