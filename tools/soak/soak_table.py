#!/usr/bin/python3
"""Prints the Markdown table of docs/results/soak.md from a soak report (soak.py --json FILE).

  /usr/bin/python3 tools/soak/soak_table.py /tmp/soak-1800.json
"""

import collections
import json
import sys

MiB = 2 ** 20


def totals(report):
    """Calls by class over all phases: rpc-level rows (a stream counts once) and stream messages."""
    t = collections.Counter()
    codes = collections.Counter()
    for phase in report["phases"]:
        for row in phase["rows"]:
            if "uncounted" in row:
                t["uncounted"] += row["uncounted"]
                continue
            level = row["what"].split()[0]
            t[level + "_det"] += sum(row["client_det"].values())
            if row["what"] == "rpc Generate":
                t["gen_det"] += sum(row["client_det"].values())
                t["gen_gave_up"] += row["gave_up"]
                t["gen_reached"] += row["reached"]
            t[level + "_gave_up"] += row["gave_up"]
            t[level + "_reached"] += row["reached"]
            codes.update(row["client_det"])
    return t, codes


def idle_samples(res):
    """The idle samples in time order: before traffic, after the warm-up, after each segment, end."""
    return [x for x in [res["pre"], res["after_warmup"]] + res.get("segments", []) + [res["end"]] if x]


def rows(report):
    args, res, sig = report["args"], report["resources"], report["sigterm"]
    t, codes = totals(report)
    checks = collections.Counter({True: "PASS", False: "FAIL", None: "INFO"}[ok] for _, ok, _ in report["checks"])
    exact = [c for c in report["checks"] if "client tally" in c[0]]
    rss = res.get("rss", {})
    idle = [x["rss"] / MiB for x in idle_samples(res)]
    out = [
        ("traffic", f"{args['duration']:g} s ({args['warmup']:g} s warm-up), {args['clients']} unary + "
                    f"{args['streams']} stream + {args.get('rest_clients', 0)} REST + "
                    f"{args.get('generate_clients', 0)} Generate clients, 1-{args['max_tokens']} tokens, seed {args['seed']}"),
        ("calls (RPCs)", f"{t['rpc_det'] + t['rpc_gave_up'] + t['uncounted']:,}: {t['rpc_det']:,} answered by the "
                         f"server, {t['rpc_gave_up']:,} given up by the client ({t['rpc_reached']:,} of them "
                         f"counted by the server), {t['uncounted']:,} refused by gRPC before any handler"),
        ("stream messages", f"{t['msg_det'] + t['msg_gave_up']:,}: {t['msg_det']:,} answered, {t['msg_gave_up']:,} "
                            f"given up ({t['msg_reached']:,} counted by the server)"),
        ("Generate streams (gRPC, in the calls above)", f"{t['gen_det'] + t['gen_gave_up']:,}: {t['gen_det']:,} "
                         f"answered, {t['gen_gave_up']:,} given up: cancelled mid-stream, own deadline "
                         f"({t['gen_reached']:,} counted by the server)"),
        ("REST inferences (HTTP)", f"{t['req_det'] + t['req_gave_up']:,}: {t['req_det']:,} answered, "
                                   f"{t['req_gave_up']:,} left before the answer ({t['req_reached']:,} counted "
                                   f"by the server)"),
        ("codes received from the server (calls, stream messages, REST)", ", ".join(f"{c} {n:,}" for c, n in codes.most_common())),
        ("client tally == server counters", f"{sum(1 for c in exact if c[1])} of {len(exact)} phases exact"),
        ("RSS under load (1 s samples)", f"peak before the steady load's last third "
                                          f"{rss.get('reference', 0) / MiB:.0f} MiB (warm-up "
                                          f"{rss.get('warmup_peak', 0) / MiB:.0f}, first third "
                                          f"{rss.get('first_third_peak', 0) / MiB:.0f}), last third's peak "
                                          f"{rss.get('last_third_peak', 0) / MiB:.0f} MiB (limit +10 %), trend "
                                          f"{rss.get('slope_mib_per_min', 0):+.1f} MiB/min"),
        ("RSS under load, medians", f"first third {rss.get('first_third_median', 0) / MiB:.1f} MiB, last third "
                                    f"{rss.get('last_third_median', 0) / MiB:.1f} MiB "
                                    f"({100 * (rss.get('last_third_median', 0) / max(1, rss.get('first_third_median', 0)) - 1):+.1f} %, "
                                    f"limit +10 %)"),
        ("idle RSS: before, after warm-up, after each segment", ", ".join(f"{v:.0f}" for v in idle) + " MiB"),
    ]
    malloc = [x.get("malloc") for x in idle_samples(res)]
    if any(malloc):
        out.append(("idle malloc in use / held (malloc_stats), same points",
                    ", ".join(f"{m['in_use'] / MiB:.1f} / {m['system'] / MiB:.1f}" if m and "in_use" in m else "?"
                              for m in malloc) + " MiB"))
    out += [
        ("open fds: before traffic / end", f"{res['pre']['fds']} / {res['end'].get('fds')}"),
        ("threads: after warm-up / end", f"{res['after_warmup']['threads']} / {res['end'].get('threads')} "
                                          f"(gRPC timer pools {res.get('grpc_timer_thread_growth', 0):+d})"),
        ("SIGTERM under load", f"exit code {sig.get('exit_code')} after {sig.get('exit_s', 0):.1f} s "
                               f"(bound {sig.get('bound_s', 0):g} s)"),
        ("soak client CPU", f"{100 * report['client_cpu_s'] / max(1, report['wall_s']):.0f} % of one core"),
        ("checks", ", ".join(f"{n} {k}" for k, n in sorted(checks.items())) +
                   f"; findings {len(report['findings'])}"),
    ]
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        report = json.load(f)
    print("| figure | value |\n|---|---|")
    for k, v in rows(report):
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
