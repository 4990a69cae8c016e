#!/usr/bin/python3
"""Generation load for reformer-server (reformer.v1 Generate, server streaming) — a benchmark, not a test.

For each concurrency level in --streams, that many closed-loop clients each send a Generate request (a prompt of
--prompt_tokens random ids, --max_new_tokens new tokens, greedy, ignore_eos), read its stream to the end, and send
the next, for --duration seconds. Reports per level: aggregate generated tokens/s, time to first token p50/p99
(client side: call start to first token), time per output token p50/p99 (gaps between messages with tokens,
divided by their tokens), and the ratio of tokens/s to the single-stream level when it was measured.
With --http HOST:PORT (the server's HTTP port) each level also reports the server's own rate from
reformer_generated_tokens_total: the Python client reads every message under the GIL and can bound the client-side
figure at high stream counts, so compare the two. Only loopback targets are accepted. Stubs come from the
repository's proto/reformer.proto via grpc_tools.

  /usr/bin/python3 tools/loadgen/generate_load.py --target 127.0.0.1:8001 --streams 1,4,16,64 \\
      --prompt_tokens 1024 --max_new_tokens 64 --duration 20 [--json out.json]

On a shared machine the figures are noisy: label them "loaded machine".
"""

import argparse
import ipaddress
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.request

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_stubs():
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="reformer-genload-")
    proto = os.path.join(SOURCE, "proto")
    if protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}",
                    os.path.join(proto, "reformer.proto")]) != 0:
        raise RuntimeError("protoc failed for proto/reformer.proto")
    sys.path.insert(0, out)
    import reformer_pb2
    import reformer_pb2_grpc
    return reformer_pb2, reformer_pb2_grpc


def check_loopback(target):
    host = target.rsplit(":", 1)[0].strip("[]")
    addr = socket.gethostbyname(host) if host != "::1" else host
    if not ipaddress.ip_address(addr).is_loopback:
        raise SystemExit(f"refusing non-loopback target {target}")


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def client(stub, v1, args, vocab, stop_at, seed, out, lock):
    rng = random.Random(seed)
    while time.monotonic() < stop_at:
        ids = [rng.randrange(3, vocab) for _ in range(args.prompt_tokens)]
        req = v1.GenerateRequest(prompt=v1.Document(ids=v1.TokenIds(ids=ids)), max_new_tokens=args.max_new_tokens,
                                 ignore_eos=True)
        start = time.monotonic()
        last, first, gaps, tokens = start, None, [], 0
        for m in stub.Generate(req, timeout=600):
            now = time.monotonic()
            n = len(m.token_ids)
            if n == 0:
                continue
            if first is None:
                first = now - start
            else:
                gaps.append((now - last) / n)
            last, tokens = now, tokens + n
        with lock:
            out["tokens"] += tokens
            out["ttft"].append(first)
            out["tpot"].extend(gaps)
            out["requests"] += 1


def server_tokens(http):
    """reformer_generated_tokens_total from the server's /metrics, or None without --http."""
    if not http:
        return None
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("reformer_generated_tokens_total"):
                return float(line.split()[-1])
    return None


def run_level(stubs, v1, args, vocab, streams):
    """`stubs(i)`: client i's stub, on its own connection (the server caps the Generate streams of one
    connection: --generate_max_streams_per_connection)."""
    out = {"tokens": 0, "ttft": [], "tpot": [], "requests": 0}
    served_before = server_tokens(args.http)
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + args.duration
    threads = [threading.Thread(target=client, args=(stubs(i), v1, args, vocab, stop_at, 1000 * streams + i, out, lock))
               for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    served_after = server_tokens(args.http)
    served = (served_after - served_before) / elapsed if served_before is not None else float("nan")
    return {"streams": streams, "requests": out["requests"], "tokens_per_s": out["tokens"] / elapsed,
            "server_tokens_per_s": served,
            "ttft_p50_ms": 1e3 * percentile(out["ttft"], 50), "ttft_p99_ms": 1e3 * percentile(out["ttft"], 99),
            "tpot_p50_ms": 1e3 * percentile(out["tpot"], 50), "tpot_p99_ms": 1e3 * percentile(out["tpot"], 99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:8001")
    ap.add_argument("--streams", default="1,4,16,64")
    ap.add_argument("--prompt_tokens", type=int, default=1024)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--http", help="the server's HTTP HOST:PORT (loopback) for its own token counter")
    ap.add_argument("--json")
    args = ap.parse_args()
    check_loopback(args.target)
    if args.http:
        check_loopback(args.http)
    import grpc
    v1, v1g = load_stubs()
    channel = grpc.insecure_channel(args.target)
    stub = v1g.ReformerServiceStub(channel)
    info = stub.GetModelInfo(v1.GetModelInfoRequest(), timeout=30)
    # One channel per client thread, each its own connection (a local subchannel pool: channels with
    # equal arguments would otherwise share one).
    clients = []

    def stubs(i):
        while len(clients) <= i:
            ch = grpc.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
            clients.append((ch, v1g.ReformerServiceStub(ch)))
        return clients[i][1]

    results = [run_level(stubs, v1, args, info.vocab_size, int(s)) for s in args.streams.split(",")]
    for ch, _ in clients:
        ch.close()
    base = next((r["tokens_per_s"] for r in results if r["streams"] == 1), None)
    print(f"model {info.name}: prompt {args.prompt_tokens} tokens, {args.max_new_tokens} new, {args.duration:.0f} s "
          f"per level")
    print("streams | requests | tokens/s (client) | tokens/s (server counter) | vs 1 stream | TTFT p50 / p99 ms | "
          "per-token p50 / p99 ms")
    for r in results:
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"{r['streams']} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['server_tokens_per_s']:.1f} | {ratio} | "
              f"{r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} | {r['tpot_p50_ms']:.2f} / {r['tpot_p99_ms']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"prompt_tokens": args.prompt_tokens, "max_new_tokens": args.max_new_tokens,
                       "levels": results}, f, indent=1)
    channel.close()


if __name__ == "__main__":
    main()
