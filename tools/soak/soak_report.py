"""The soak's summary: calls by kind and code, the reconciliation per phase, resources, SIGTERM,
the checks and the findings."""

import collections

import soak_reconcile as rec

MiB = 2 ** 20


def merged_stats(report):
    out = collections.defaultdict(collections.Counter)
    for p in report.phases:
        for kind, codes in p["stats"].items():
            out[kind].update(codes)
    return out


def stats_lines(report):
    lines = [f"{'call kind':<40} {'calls':>6}  terminal status as the client saw it"]
    for kind, codes in sorted(merged_stats(report).items()):
        text = " ".join(f"{c}={n}" for c, n in codes.most_common())
        lines.append(f"{kind:<40} {sum(codes.values()):>6}  {text}")
    return lines


def resource_lines(report):
    r = report.resources
    lines = []
    rss = r.get("rss")
    if rss:
        growth = 100 * (rss["last_third_peak"] / rss["reference"] - 1)
        lines.append(f"RSS (every 1 s, {rss['samples']} samples): peak before the steady load's last third "
                     f"{rss['reference'] / MiB:.1f} MiB (warm-up {rss['warmup_peak'] / MiB:.1f}, first third "
                     f"{rss['first_third_peak'] / MiB:.1f}), last third's peak {rss['last_third_peak'] / MiB:.1f} MiB "
                     f"({growth:+.1f} %, limit {rss['limit'] / MiB:.1f}), last {rss['steady_last'] / MiB:.1f} MiB, "
                     f"trend {rss['slope_mib_per_min']:+.2f} MiB/min, VmHWM {rss['hwm'] / MiB:.1f} MiB")
    pre, warm, end = r.get("pre", {}), r.get("after_warmup", {}), r.get("end", {})
    idle = [x.get("rss", 0) / MiB for x in [pre, warm] + r.get("segments", []) + [end] if x]
    lines.append("idle RSS before traffic, after warm-up, after each steady segment: "
                 + ", ".join(f"{v:.1f}" for v in idle) + " MiB")
    lines.append(f"open fds: {pre.get('fds')} before traffic, {warm.get('fds')} after warm-up, "
                 f"{end.get('fds')} at the end")
    lines.append(f"threads:  {pre.get('threads')} before traffic, {warm.get('threads')} after warm-up, "
                 f"{end.get('threads')} at the end")
    cpu = [s["cpu_s"] for _, _, s in getattr(report, "samples", [])]
    if cpu:
        share = 100 * report.client_cpu_s / max(1, report.wall_s)
        lines.append(f"CPU: server {cpu[-1] - cpu[0]:.0f} s; soak client {report.client_cpu_s:.0f} s over "
                     f"{report.wall_s:.0f} s wall ({share:.0f} % of one core)")
    return lines


def render(report, args):
    f = report.facts
    end = "" if args.no_sigterm else ", then SIGTERM under load"
    head = [f"reformer-server soak: {args.duration:g} s of traffic ({args.warmup:g} s warm-up){end}"]
    if f is not None:
        head.append(f"model {f.name!r}: vocab {f.vocab}, context {f.context}, max request "
                    f"{f.max_request_tokens} tokens; {args.clients} unary clients, {args.streams} stream "
                    f"clients, requests of 1-{args.max_tokens} tokens, seed {args.seed}")
    out = head + ["", *stats_lines(report)]
    for p in report.phases:
        out += ["", f"phase {p['name']} ({p['seconds']:.0f} s): client tally vs server counters",
                rec.format_rows(p["rows"])]
    out += ["", *resource_lines(report)]
    if report.sigterm:
        s = report.sigterm
        out.append(f"SIGTERM: exit code {s.get('exit_code')} after {s.get('exit_s', 0):.1f} s "
                   f"(bound {s.get('bound_s', 0):g} s); final scrape {s.get('scrape_s', 0):.1f} s after SIGTERM")
    mark = {True: "PASS", False: "FAIL", None: "INFO"}
    out += ["", "checks:"] + [f"  {mark[ok]}  {n}: {d}" for n, ok, d in report.checks]
    findings = report.findings.lines()
    out += ["", "findings:" if findings else "findings: none"] + [f"  {x}" for x in findings]
    v = report.violations()
    out += ["", f"RESULT: {'PASS' if not v else f'FAIL ({len(v)} violations)'}"]
    return "\n".join(out)


def as_json(report, args):
    return {"args": {k: v for k, v in vars(args).items() if k != "skip"},
            "skip_cases": sorted(args.skip),
            "stats": {k: dict(v) for k, v in merged_stats(report).items()},
            "phases": report.phases, "resources": report.resources, "sigterm": report.sigterm,
            "checks": report.checks, "findings": {k: {"count": n, "samples": report.findings.samples[k]}
                                                  for k, n in report.findings.count.items()},
            "violations": report.violations(), "client_cpu_s": report.client_cpu_s, "wall_s": report.wall_s,
            "samples": samples_json(report)}


def samples_json(report):
    """[seconds since the first sample, phase, RSS MiB, threads, fds] once a second."""
    samples = getattr(report, "samples", [])
    t0 = samples[0][0] if samples else 0
    return [[round(t - t0, 1), p, round(s["rss"] / MiB, 1), s["threads"], s["fds"]] for t, p, s in samples]
