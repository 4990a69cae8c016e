#!/usr/bin/python3
"""Soak test with faults for reformer-server (issue 15 item 4). See tools/soak/README.md.

Drives a server for --duration seconds with mixed traffic (valid ModelInfer/ModelStreamInfer/Score/
Embed of 1 to --max_tokens tokens, malformed requests, deadlines that expire in the queue and
mid-compute, cancellations, TCP resets and killed channels mid-call, stream clients that stop
reading), then SIGTERM under load. Tallies every call's terminal status and reconciles it exactly
with the server's counters by code; samples RSS, fds and threads once a second. Prints a summary
and exits 1 on any violation, 2 on a usage or start-up error.

  /usr/bin/python3 tools/soak/soak.py --server build/bin/reformer-server --duration 60
  /usr/bin/python3 tools/soak/soak.py --attach --pid PID --grpc 127.0.0.1:8001 --http 127.0.0.1:8000 \
      --duration 1800 --drain_timeout_s 30 --drain_min_s 35
"""

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soak_phases  # noqa: E402
import soak_proc  # noqa: E402
import soak_report  # noqa: E402
import soak_wire  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("server (start one, or attach to a running one)")
    src.add_argument("--server", help="reformer-server binary to start on loopback, port 0")
    src.add_argument("--model_dir", default=os.path.join(soak_wire.REPO_ROOT, "models", "default"))
    src.add_argument("--server_arg", action="append", default=[], help="extra server flag (repeatable)")
    src.add_argument("--server_log", default="", help="server stderr goes here (default: a temp file)")
    src.add_argument("--attach", action="store_true", help="use a running server (--pid, --grpc, --http)")
    src.add_argument("--pid", type=int, help="pid of the attached server (for /proc and SIGTERM)")
    src.add_argument("--grpc", help="host:port of the attached server's gRPC port (loopback)")
    src.add_argument("--http", help="host:port of the attached server's HTTP port (loopback)")
    t = p.add_argument_group("traffic")
    t.add_argument("--duration", type=float, default=60, help="seconds of traffic before SIGTERM")
    t.add_argument("--warmup", type=float, default=0, help="warm-up seconds (default 25 %% of --duration, 10-120 s, at most half)")
    t.add_argument("--clients", type=int, default=6, help="closed-loop clients of valid unary calls")
    t.add_argument("--streams", type=int, default=1, help="ModelStreamInfer clients")
    t.add_argument("--rest_clients", type=int, default=1, help="closed-loop REST inference clients (HTTP)")
    t.add_argument("--generate_clients", type=int, default=1,
                   help="Generate (gRPC server-streaming) clients; none when the model is not causal")
    t.add_argument("--max_tokens", type=int, default=16384, help="largest request, in tokens")
    t.add_argument("--skip_cases", default="", help="comma-separated malformed cases not to send")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--stall_s", type=float, default=60, help="a stream silent this long has stalled")
    d = p.add_argument_group("shutdown")
    d.add_argument("--drain_timeout_s", type=float, default=10, help="the server's --drain_timeout_s")
    d.add_argument("--drain_min_s", type=float, default=-1,
                   help="the server's --drain_min_s (started servers: drain_timeout_s + 5, which keeps "
                        "/metrics up for the final scrape)")
    d.add_argument("--exit_slack_s", type=float, default=5, help="allowed beyond the drain bound")
    d.add_argument("--no_sigterm", action="store_true", help="leave the server running at the end")
    c = p.add_argument_group("checks and output")
    c.add_argument("--rss_growth", type=float, default=0.10, help="allowed RSS growth after warm-up")
    c.add_argument("--grpc_timer_thread_slack", type=int, default=4,
                   help="threads gRPC's growing pools (timers, default executor) may add after the warm-up "
                        "(they never shrink)")
    c.add_argument("--json", default="", help="write the full report here")
    c.add_argument("--malloc_stats", action="store_true",
                   help="diagnosis: at each idle sample, glibc's malloc_stats() of the started server via gdb "
                        "(bytes in use vs held; printed and in the JSON report)")
    c.add_argument("--proto_dir", default=os.path.join(soak_wire.REPO_ROOT, "proto"))
    args = p.parse_args(argv)
    validate_args(p, args)
    return args


def validate_args(p, args):
    if bool(args.server) == bool(args.attach):
        p.error("give --server BINARY or --attach (with --pid, --grpc, --http)")
    if args.attach and not (args.pid and args.grpc and args.http):
        p.error("--attach needs --pid, --grpc and --http")
    if args.attach:
        for addr in (args.grpc, args.http):
            host = addr.rsplit(":", 1)[0].strip("[]")
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                p.error(f"{addr}: the soak only targets loopback addresses")
    if not 5 <= args.duration <= 24 * 3600:
        p.error("--duration must be in [5, 86400] seconds")
    if not 1 <= args.clients <= 256 or not 0 <= args.streams <= 32:
        p.error("--clients must be in [1, 256], --streams in [0, 32]")
    if not 0 <= args.rest_clients <= 16 or not 0 <= args.generate_clients <= 16:
        p.error("--rest_clients and --generate_clients must be in [0, 16]")
    if args.warmup <= 0:
        args.warmup = min(120.0, max(10.0, 0.25 * args.duration), 0.5 * args.duration)
    if args.warmup >= args.duration:
        p.error("--warmup must be shorter than --duration")
    if args.drain_min_s < 0:
        args.drain_min_s = args.drain_timeout_s + 5 if args.server else 0
    args.skip = {s.strip() for s in args.skip_cases.split(",") if s.strip()}


def start_server(args):
    if args.attach:
        g_host, g_port = args.grpc.rsplit(":", 1)
        h_host, h_port = args.http.rsplit(":", 1)
        return soak_proc.ServerProcess(pid=args.pid, grpc_port=int(g_port), http_port=int(h_port),
                                       host=g_host.strip("[]"))
    log = args.server_log or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"reformer-soak-{os.getpid()}.log")
    args.server_log = log
    extra = ["--drain_timeout_s", f"{int(args.drain_timeout_s)}", "--drain_min_s", f"{args.drain_min_s:g}"]
    return soak_proc.ServerProcess.spawn(args.server, args.model_dir, extra + args.server_arg, log)


def main(argv=None):
    args = parse_args(argv)
    stubs = soak_wire.load_stubs(args.proto_dir)
    try:
        server = start_server(args)
    except (RuntimeError, OSError) as e:
        print(f"soak: {e}", file=sys.stderr)
        return 2
    if args.malloc_stats:
        soak_phases.MALLOC_STATS_LOG = args.server_log
    wall0, cpu0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    try:
        report = asyncio.run(soak_phases.run(args, server, stubs))
    finally:
        if args.server and not args.no_sigterm:
            server.kill()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    report.client_cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    report.wall_s = time.monotonic() - wall0
    print(soak_report.render(report, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(soak_report.as_json(report, args), f, indent=2)
    return 1 if report.violations() else 0


if __name__ == "__main__":
    sys.exit(main())
