"""The soak's timeline: warm-up, steady, SIGTERM under load. Each traffic phase starts from a
scrape, ends with every client call finished and the server quiescent, and is reconciled alone."""

import asyncio
import os
import sys
import time

import grpc

import soak_generate
import soak_proc
import soak_rest
import soak_reconcile as rec
import soak_rss
import soak_sigterm
import soak_traffic as tr
import soak_wire

QUIESCE_TIMEOUT_S = 60
IDLE_RSS_FLOOR = 16 << 20  # the idle check allows max(--rss_growth, this) (allocator noise)
# The server's idle RSS (workers have returned their working memory) grows in steps while glibc's
# arenas reach their high-water fragmentation, then stays flat (measured here: 66 -> 98 MiB over
# the first 6 minutes, flat for the next 2; one 5-minute run stepped 94 -> 194 MiB). A leak grows
# without end. So the idle check compares the middle of the steady load with its end, and only when
# that second half lasts 5 minutes; shorter runs report it as information.
IDLE_RSS_MIN_STEADY_S = 600
RESOURCE_SETTLE_S = 30


class Report:
    def __init__(self):
        self.findings = tr.Findings()
        self.checks = []        # (name, ok, detail)
        self.phases = []        # dicts: name, seconds, stats, rows
        self.resources = {}
        self.sigterm = {}
        self.facts = None
        self.client_cpu_s = 0.0
        self.wall_s = 0.0

    def check(self, name, ok, detail, enforced=True):
        """A failed check is a violation when `enforced`, otherwise reported as information."""
        self.checks.append((name, bool(ok) if enforced else None if not ok else True, detail))

    def violations(self):
        out = [f"{n}: {d}" for n, ok, d in self.checks if ok is False]
        return out + self.findings.lines()


async def run(args, server, stubs):
    report = Report()
    sampler = soak_proc.Sampler(server.pid)
    sampler.start()
    try:
        await soak(args, server, stubs, report, sampler)
    finally:
        sampler.stop()
    report.samples = sampler.samples
    return report


async def soak(args, server, stubs, report, sampler):
    http = (server.host, server.http_port)
    facts = await wait_ready(server, stubs)
    report.facts = facts
    corpus = read_corpus(args)
    gen = soak_wire.Generator(stubs, facts, args.seed, args.max_tokens, corpus)
    names = [n for n, _ in soak_wire.malformed_cases(gen)]
    if args.skip - set(names):
        print(f"soak: unknown --skip_cases {', '.join(sorted(args.skip - set(names)))}; the cases are: "
              f"{', '.join(names)}", file=sys.stderr)
        raise SystemExit(2)
    canaries = {}
    sampler.phase = "idle"
    pre = await settled_sample(server.pid, malloc=True)
    report.resources["pre"] = pre
    new_ctx = lambda extra=(): tr.Ctx(stubs, facts, gen, server.grpc_target, report.findings, canaries, extra)
    await traffic_phase("warm-up", args, new_ctx(), http, report, sampler, args.warmup, priming=True)
    report.resources["after_warmup"] = await settled_sample(server.pid, malloc=True)
    report.resources["segments"] = []
    segments = steady_segments(args)
    for i in range(segments):
        await traffic_phase(f"steady-{i + 1}", args, new_ctx(), http, report, sampler,
                            (args.duration - args.warmup) / segments)
        if i + 1 < segments:
            report.resources["segments"].append(await settled_sample(server.pid, malloc=True))
    check_resources(args, server, report, sampler)
    await check_handles(args, server, report)
    if not args.no_sigterm:
        await soak_sigterm.sigterm_phase(args, server, new_ctx({"Unavailable"}), http, report, sampler)


def steady_segments(args):
    """The steady load runs in segments of about 5 minutes (at least 2 when it lasts 20 s or more),
    each reconciled alone, with the idle RSS, fds and threads measured between them."""
    steady = args.duration - args.warmup
    return 1 if steady < 20 else max(2, round(steady / 300))


async def wait_ready(server, stubs, timeout=180):
    """Waits for ServerReady and returns the model's facts (GetModelInfo, ModelMetadata)."""
    end = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        kserve, api = stubs.pbg.GRPCInferenceServiceStub(ch), stubs.v1g.ReformerServiceStub(ch)
        while time.monotonic() < end:
            if not server.alive():
                raise RuntimeError("the server exited before it was ready")
            try:
                if (await kserve.ServerReady(stubs.pb.ServerReadyRequest(), timeout=5)).ready:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the server was not ready within {timeout}s")
        info = await api.GetModelInfo(stubs.v1.GetModelInfoRequest(), timeout=30)
    return soak_wire.ModelFacts(info.name, info.vocab_size, info.max_tokens_per_document, info.embedding_size,
                                info.max_tokens_per_request, info.causal, bool(info.tokenizer))


def read_corpus(args):
    path = os.path.join(soak_wire.REPO_ROOT, "models", "default", "heldout.txt")
    with open(path, "rb") as f:
        data = f.read()
    return bytes(b for b in data if 32 <= b < 127 or b == 10) or b"In the beginning " * 1000


async def settled_sample(pid, seconds=4.0, malloc=False):
    """The minimum fds/threads/RSS over 3 s of samples once connections had time to close and the
    workers to return their working memory (after 2 s without work, README "Threads")."""
    await asyncio.sleep(seconds)
    samples = []
    for _ in range(15):
        s = soak_proc.sample(pid)
        if s:
            samples.append(s)
        await asyncio.sleep(0.2)
    if not samples:
        return {}
    out = {"fds": min(s["fds"] for s in samples), "threads": min(s["threads"] for s in samples),
           "rss": min(s["rss"] for s in samples), "thread_names": soak_proc.thread_names(pid),
           "fd_kinds": soak_proc.fd_kinds(pid)}
    if malloc:
        add_malloc_stats(pid, out)
    return out


def add_malloc_stats(pid, out):
    """With --malloc_stats: glibc's numbers (soak_proc.malloc_stats) into the idle sample `out`."""
    if MALLOC_STATS_LOG is not None and out:
        out["malloc"] = soak_proc.malloc_stats(pid, MALLOC_STATS_LOG)
        m = out["malloc"]
        if m:
            print(f"soak: idle RSS {out['rss'] / 2**20:.1f} MiB, malloc in use {m.get('in_use', 0) / 2**20:.1f} MiB "
                  f"of {m.get('system', 0) / 2**20:.1f} MiB held, {m.get('arenas', 0)} arenas; anon {m.get('anon', 0) / 2**20:.1f} "
                  f"(huge {m.get('anon_huge', 0) / 2**20:.1f}), file {m.get('file', 0) / 2**20:.1f} MiB", file=sys.stderr, flush=True)
    return out


MALLOC_STATS_LOG = None  # the server log when --malloc_stats asks for glibc's numbers at each idle sample


# ------------------------------------------------------------------------------ traffic phases
def roles(args, ctx, stop, http, malformed=True):
    """The clients of a traffic phase. Without `malformed` (the warm-up) no malformed request is
    sent, so that the warm-up's RSS peak, the reference of the RSS check, is that of valid traffic:
    a malformed request that costs memory then shows as growth after the warm-up."""
    skip = args.skip if malformed else {"*"}
    out = [tr.valid_worker(ctx, stop, i) for i in range(args.clients)]
    out += [tr.stream_worker(ctx, stop, skip, i) for i in range(args.streams)]
    out += [tr.rude_worker(ctx, stop), tr.control_worker(ctx, stop), tr.probe_worker(ctx, stop, http)]
    out += [soak_rest.rest_worker(ctx, stop, http, malformed, i) for i in range(args.rest_clients)]
    if ctx.facts.causal:
        out += [soak_generate.generate_worker(ctx, stop, malformed) for _ in range(args.generate_clients)]
    if malformed:
        out.append(tr.malformed_worker(ctx, stop, skip))
    return [asyncio.ensure_future(r) for r in out]


async def finish_roles(ctx, tasks, grace):
    """Waits for the roles to finish their last calls; a role that does not is a finding."""
    done, pending = await asyncio.wait(tasks, timeout=grace)
    for t in pending:
        t.cancel()
        ctx.findings.add("client role did not finish", f"still waiting {grace:.0f}s after the phase ended")
    for t in done:
        if t.exception() is not None:
            ctx.findings.add("soak client error (a bug in the soak tool)", repr(t.exception()))


async def traffic_phase(name, args, ctx, http, report, sampler, seconds, priming=False):
    ctx.stall_s = args.stall_s
    before = await scrape(http)
    sampler.phase = name
    t0 = time.monotonic()
    stop = asyncio.Event()
    tasks = roles(args, ctx, stop, http, malformed=not priming)
    if priming:
        tasks.append(asyncio.ensure_future(tr.priming_burst(ctx, 2 * args.clients)))
    await asyncio.sleep(seconds)
    stop.set()
    await finish_roles(ctx, tasks, args.stall_s + 120)
    sampler.phase = name + ":quiesce"
    after, quiet = await quiesce(http)
    report.check(f"{name}: server quiescent after the load", quiet,
                 "in-flight 0, queue 0, every started RPC handled" if quiet else
                 f"not within {QUIESCE_TIMEOUT_S}s: {imbalance(after)}")
    record_phase(name, ctx, report, before, after, time.monotonic() - t0)


def record_phase(name, ctx, report, before, after, seconds, open_streams=0):
    rows, violations = rec.reconcile(ctx.tally, rec.ServerCounts(before, after), open_streams)
    report.check(f"{name}: client tally == server counters", not violations, "; ".join(violations) or "exact")
    report.phases.append({"name": name, "seconds": seconds, "stats": {k: dict(v) for k, v in ctx.stats.items()},
                          "rows": rows})


async def scrape(http, attempts=3):
    for i in range(attempts):
        try:
            status, body = await tr.http_get(*http, "/metrics")
            if status == 200:
                return rec.parse_prometheus(body)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError):
            pass
        await asyncio.sleep(0.2 * (i + 1))
    return None


def imbalance(parsed):
    """Text: gauges and started-minus-handled per method (what keeps the server from quiescing)."""
    if parsed is None:
        return "no /metrics"
    counts = rec.ServerCounts({}, parsed)
    open_rpcs = {k[1]: counts.started[k] - sum(counts.handled.get(k, {}).values())
                 for k in counts.started if counts.started[k] != sum(counts.handled.get(k, {}).values())}
    return (f"inflight {rec.gauge(parsed, 'reformer_inflight_requests'):g}, queue "
            f"{rec.gauge(parsed, 'reformer_queue_requests'):g}, started-handled {open_rpcs}")


def balanced(parsed, open_streams=0):
    """Idle, and every started RPC handled (up to `open_streams` ModelStreamInfer calls left open)."""
    counts = rec.ServerCounts({}, parsed)
    stream = (rec.KSERVE, rec.STREAM_METHOD)
    return (rec.gauge(parsed, "reformer_inflight_requests") == 0 and rec.gauge(parsed, "reformer_queue_requests") == 0
            and all(0 <= counts.started[k] - sum(counts.handled.get(k, {}).values())
                    <= (open_streams if k == stream else 0) for k in counts.started))


def counters(parsed):
    return {k: v for k, v in parsed.items() if k[0].endswith("_total")}


async def quiesce(http, timeout=QUIESCE_TIMEOUT_S, open_streams=0):
    """The scrape once the server is idle and its counters stopped moving (two equal scrapes). A
    call the client gave up on may still be finishing on the server when the client is done."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        parsed = await scrape(http)
        if parsed is not None:
            if last is not None and balanced(parsed, open_streams) and counters(last) == counters(parsed):
                return parsed, True
            last = parsed
        await asyncio.sleep(0.5)
    return last, False


# ----------------------------------------------------------------------------------- resources
def check_resources(args, server, report, sampler):
    """RSS flat over the steady load: the last third's peak and median within +rss_growth of what
    came before it (soak_rss.py says why not of the warm-up's peak alone). Samples under load only:
    the idle pauses between segments would pull the medians down."""
    warm = [(t, s["rss"]) for t, p, s in sampler.samples if p in ("warm-up", "warm-up:quiesce")]
    steady = [(t, s["rss"]) for t, p, s in sampler.samples
              if p.startswith("steady") and not p.endswith(":quiesce")]
    if not warm or not steady:
        report.check("RSS sampled", False, "no samples (is /proc/<pid> readable?)")
        return
    peak_ok, drift_ok, enforced, rss = soak_rss.rss_flat(warm, steady, args.rss_growth)
    rss.update({"steady_last": steady[-1][1], "samples": len(warm) + len(steady),
                "hwm": [s for _, p, s in sampler.samples if p.startswith("steady")][-1]["hwm"]})
    report.resources["rss"] = rss
    mib = lambda key: f"{rss[key] / 2**20:.1f}"
    report.check("RSS flat over the steady load: peak", peak_ok,
                 f"last third's peak {mib('last_third_peak')} MiB vs the peak before it {mib('reference')} MiB "
                 f"(warm-up {mib('warmup_peak')}, first third {mib('first_third_peak')}; limit "
                 f"+{100 * args.rss_growth:.0f} % = {mib('limit')} MiB)")
    report.check("RSS flat over the steady load: median", drift_ok,
                 f"last third's median {mib('last_third_median')} MiB vs the first third's "
                 f"{mib('first_third_median')} MiB (limit {mib('median_limit')} MiB)"
                 + ("" if enforced else f"; information only below {soak_rss.DRIFT_MIN_STEADY_S} s of steady load"),
                 enforced)


# gRPC C-core's timer pools start a thread whenever timers fire while every timer thread is busy, and
# never stop one ("The number of timer threads is always increasing until all the threads are
# stopped": src/core/lib/iomgr/timer_manager.cc and the EventEngine's timer_manager.cc, gRPC 1.51).
# Its default executor ("default-executor", 15 characters in /proc: "default-executo") likewise adds a
# thread when work queues behind a long job, up to twice the CPUs, and keeps it (src/core/lib/iomgr/
# executor.cc): a bounded pool, not a leak; the same slack covers it.
GRPC_GROWING_POOLS = ("grpc_global_tim", "timer_manager", "default-executo")


def thread_growth(now, base):
    """(growth outside gRPC's timer pools by name, growth of those pools)."""
    names = set(now) | set(base)
    diff = {n: now.get(n, 0) - base.get(n, 0) for n in names if now.get(n, 0) != base.get(n, 0)}
    pools = sum(v for n, v in diff.items() if n in GRPC_GROWING_POOLS)
    return {n: v for n, v in diff.items() if n not in GRPC_GROWING_POOLS and v > 0}, pools


async def check_handles(args, server, report):
    """fds back to the count before any traffic; threads back to the count after the warm-up
    (gRPC's timer pools may have grown by at most --grpc_timer_thread_slack)."""
    pre, warm = report.resources["pre"], report.resources["after_warmup"]
    end = time.monotonic() + RESOURCE_SETTLE_S
    now = {}
    while time.monotonic() < end:
        now = await settled_sample(server.pid, seconds=0.5)
        if now and now["fds"] <= pre["fds"] and not thread_growth(now["thread_names"], warm["thread_names"])[0]:
            break
    add_malloc_stats(server.pid, now)  # after the loop: gdb would eat its time
    report.resources["end"] = now
    report.check("open fds back to baseline", now and now["fds"] <= pre["fds"],
                 f"{now.get('fds')} now, {pre['fds']} before any traffic ({now.get('fd_kinds')} vs {pre['fd_kinds']})")
    other, pools = thread_growth(now.get("thread_names", {}), warm["thread_names"])
    report.resources["grpc_timer_thread_growth"] = pools
    check_idle_rss(args, report, warm, now)
    report.check("threads back to baseline", now and not other and pools <= args.grpc_timer_thread_slack,
                 f"{now.get('threads')} now, {warm['threads']} after the warm-up, {pre['threads']} before any "
                 f"traffic; grown: {other or 'none'} outside gRPC's timer pools, {pools:+d} in them "
                 f"(allowed +{args.grpc_timer_thread_slack})")


def check_idle_rss(args, report, warm, now):
    """Idle RSS at the end within max(--rss_growth, 16 MiB) of the idle RSS half-way through the
    steady load (the segment boundary nearest to it)."""
    segments = report.resources["segments"]
    mid = segments[(len(segments) - 1) // 2] if segments else warm
    idle0, idle1 = mid["rss"], now.get("rss", 0)
    allowed = max(args.rss_growth * idle0, IDLE_RSS_FLOOR)
    series = [x["rss"] / 2**20 for x in [warm] + segments + [now] if x]
    enforced = args.duration - args.warmup >= IDLE_RSS_MIN_STEADY_S
    report.check("idle RSS flat over the second half of the steady load", idle1 <= idle0 + allowed,
                 f"idle {idle0 / 2**20:.1f} MiB half-way, {idle1 / 2**20:.1f} MiB at the end (allowed "
                 f"+{allowed / 2**20:.1f} MiB; after warm-up and each segment: "
                 f"{', '.join(f'{v:.1f}' for v in series)} MiB)"
                 + ("" if enforced else f"; information only below {IDLE_RSS_MIN_STEADY_S} s of steady load"),
                 enforced)
