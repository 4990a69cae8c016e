#!/usr/bin/python3
"""Every PromQL query deploy/ ships: Grafana dashboard panels and variables, and the prometheus-adapter rules.

Used by run_promtool.sh (`--as-rules FILE` writes them as recording rules so `promtool check rules` parses each
one offline) and by prometheus_ingestion_test.py (evaluates them against a real Prometheus).
Grafana variables are substituted: $__rate_interval / $__interval -> the given window, $namespace / $job -> regexes.
label_values(m, l) variable queries become `group by (l) (m)`. Adapter templates: <<.Series>> -> the series name,
<<.LabelMatchers>> -> the given matchers, <<.GroupBy>> -> the given label list.
"""

import argparse
import json
import os
import re
import sys

import yaml


def dashboard_queries(source_dir, rate_interval="1m", namespace=".*", job=".*"):
    """[(name, expr)] for every panel target and every query variable of the dashboard."""
    with open(os.path.join(source_dir, "deploy/monitoring/grafana-dashboard.json")) as f:
        dash = json.load(f)

    def subst(expr):
        expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
        expr = re.sub(r"\$\{?namespace\}?", namespace, expr)
        expr = re.sub(r"\$\{?job\}?", job, expr)
        if "$" in expr:
            raise ValueError(f"unsubstituted Grafana variable in {expr}")
        return expr

    out = []

    def walk(panels):
        for p in panels:
            if p.get("type") == "row":
                walk(p.get("panels", []))
                continue
            for t in p.get("targets", []):
                out.append((f"panel {p['id']} '{p['title']}' {t['refId']}", subst(t["expr"])))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", q.strip())
        if not m:
            raise ValueError(f"variable {v['name']}: unsupported query {q}")
        out.append((f"variable {v['name']}", f"group by ({m.group(2)}) ({subst(m.group(1))})"))
    return out


def adapter_rules(source_dir):
    """The prometheus-adapter rules (parsed config.yaml of the adapter ConfigMap)."""
    with open(os.path.join(source_dir, "deploy/k8s/prometheus-adapter/adapter-config.yaml")) as f:
        cm = yaml.safe_load(f)
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def adapter_queries(source_dir, label_matchers='namespace!=""', group_by="pod"):
    """[(name, expr)]: each rule's seriesQuery and its metricsQuery with the adapter's templates expanded."""
    out = []
    for r in adapter_rules(source_dir):
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", r["seriesQuery"]).group(0)
        name = r.get("name", {}).get("as", series)
        out.append((f"adapter {name} seriesQuery", r["seriesQuery"]))
        q = (r["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", label_matchers)
             .replace("<<.GroupBy>>", group_by))
        if "<<" in q:
            raise ValueError(f"unexpanded adapter template in {q}")
        out.append((f"adapter {name} metricsQuery", q))
    return out


# What the dashboard must show (issue 6): (description, regex over one panel's expressions).
REQUIRED_PANELS = [
    ("request rate", r"rate\(reformer_requests_total"),
    ("latency p50", r"histogram_quantile\(0\.5, .*reformer_request_duration_seconds_bucket"),
    ("latency p99", r"histogram_quantile\(0\.99, .*reformer_request_duration_seconds_bucket"),
    ("queue tokens", r"reformer_queue_tokens"),
    ("batch size", r"reformer_batch_size_"),
    ("tokens/s", r"rate\(reformer_tokens_processed_total"),
    ("workspace memory", r"reformer_workspace_bytes"),
    ("time to first token", r"reformer_generate_time_to_first_token_seconds_bucket"),
    ("time per output token", r"reformer_generate_time_per_output_token_seconds_bucket"),
    ("generated tokens/s", r"rate\(reformer_generated_tokens_total"),
    ("active sequences", r"reformer_generate_active_sequences"),
    ("generation cache bytes", r"reformer_generate_cache_bytes"),
]


def check_dashboard(source_dir):
    """Structural problems of the dashboard: [message]. Empty = fine."""
    with open(os.path.join(source_dir, "deploy/monitoring/grafana-dashboard.json")) as f:
        dash = json.load(f)
    problems = []
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids {ids}")
    for p in panels:
        if not p.get("targets"):
            problems.append(f"panel {p['id']} '{p.get('title')}' has no queries")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p['id']} does not use the $datasource variable")
    for what, pattern in REQUIRED_PANELS:
        if not any(re.search(pattern, " ".join(t["expr"] for t in p["targets"])) for p in panels):
            problems.append(f"no panel shows {what} (/{pattern}/)")
    cells = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"panels {cells[(x, y)]} and {p['id']} overlap at ({x}, {y})")
                    break
                cells[(x, y)] = p["id"]
            else:
                continue
            break
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--as-rules", help="write the queries as a Prometheus recording-rule file")
    ap.add_argument("--check-dashboard", action="store_true", help="fail on structural dashboard problems")
    args = ap.parse_args()
    if args.check_dashboard:
        problems = check_dashboard(args.source_dir)
        for p in problems:
            print(f"dashboard: {p}")
        if problems:
            sys.exit(1)
        print(f"dashboard: OK ({len(REQUIRED_PANELS)} required views present, no overlaps)")
    queries = dashboard_queries(args.source_dir) + adapter_queries(args.source_dir)
    if args.as_rules:
        rules = [{"record": f"check:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
        with open(args.as_rules, "w") as f:
            yaml.safe_dump({"groups": [{"name": "deploy-queries", "rules": rules}]}, f, sort_keys=False)
    for name, expr in queries:
        print(f"{name}: {expr}")
    print(f"{len(queries)} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
