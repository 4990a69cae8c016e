"""Exact reconciliation of the soak client's tally with the server's Prometheus counters.

Every call the soak makes ends in one of three classes (see README.md, "How the counts reconcile"):
  det        the client got a terminal status the server produced; the server counted exactly that
             code once. Compared one for one.
  gave_up    the client itself ended the call (cancel, its own deadline timer, killed the channel,
             reset the TCP connection, closed a stream with answers unread). The server counted it
             at most once, with one code from the call's `allowed` set, or never (the call did not
             reach it). These are the only unknowns, and they are bounded exactly below.
  uncounted  refused by the gRPC library before any handler (unknown method, message above the
             receive limit, the built-in health service): the server's metrics must not see it.

Three levels are reconciled: "rpc" against grpc_server_handled_total{grpc_service,grpc_method}
(one per RPC, a stream counts once), "msg" against reformer_requests_total{method} for
ModelStreamInfer (one per request message of a stream) and "req" against
reformer_requests_total{method} for REST inference (one per HTTP request; HTTP has no gRPC counters).
For unary inference methods and Generate reformer_requests_total must equal
grpc_server_handled_total code by code.

Pure functions only (no I/O): tests/soak/soak_reconcile_test.py checks them.
"""

import collections
import itertools
import re

UNARY_INFER = ("ModelInfer", "Score", "Embed")
REQUESTS_EQUAL_HANDLED = UNARY_INFER + ("Generate",)  # one reformer_requests_total count per RPC
STREAM_METHOD = "ModelStreamInfer"
REST_METHODS = ("REST.ModelInfer",)  # HTTP: only reformer_requests_total counts them
KSERVE = "inference.GRPCInferenceService"

# grpc.StatusCode names -> the server's label spelling (server/metrics/server_metrics.cc).
CODE_LABELS = {
    "OK": "OK", "CANCELLED": "Canceled", "UNKNOWN": "Unknown", "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded", "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied", "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition", "ABORTED": "Aborted", "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented", "INTERNAL": "Internal", "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss", "UNAUTHENTICATED": "Unauthenticated",
}

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """{(name, frozenset(labels)): value} for every sample line of a text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = frozenset((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                           for k, v in _LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def series(scrape, name, **match):
    """{labels dict as sorted tuple: value} of the samples of `name` whose labels include `match`."""
    out = {}
    for (n, labels), v in scrape.items():
        d = dict(labels)
        if n == name and all(d.get(k) == val for k, val in match.items()):
            out[tuple(sorted(d.items()))] = v
    return out


def gauge(scrape, name):
    return sum(series(scrape, name).values())


class ServerCounts:
    """Counter deltas between two scrapes, keyed the way the reconciliation needs them."""

    def __init__(self, before, after):
        self.handled = collections.defaultdict(collections.Counter)   # (service, method) -> code -> n
        self.started = collections.Counter()                          # (service, method) -> n
        self.requests = collections.defaultdict(collections.Counter)  # method -> code -> n
        for labels, v in self._delta(before, after, "grpc_server_handled_total"):
            self.handled[(labels["grpc_service"], labels["grpc_method"])][labels["grpc_code"]] += v
        for labels, v in self._delta(before, after, "grpc_server_started_total"):
            self.started[(labels["grpc_service"], labels["grpc_method"])] += v
        for labels, v in self._delta(before, after, "reformer_requests_total"):
            self.requests[labels["method"]][labels["code"]] += v

    @staticmethod
    def _delta(before, after, name):
        b = series(before, name)
        for key, v in series(after, name).items():
            d = int(round(v - b.get(key, 0.0)))
            if d != 0:
                yield dict(key), d


class Tally:
    """The client's side: what it knows about every call and stream message it made."""

    def __init__(self):
        self.det = collections.defaultdict(collections.Counter)      # (level, key) -> code -> n
        self.gave_up = collections.defaultdict(collections.Counter)  # (level, key) -> allowed -> n
        self.uncounted = collections.Counter()                       # (level, key) -> n

    def add_det(self, level, key, code):
        self.det[(level, key)][code] += 1

    def add_gave_up(self, level, key, allowed):
        self.gave_up[(level, key)][frozenset(allowed)] += 1

    def add_uncounted(self, level, key):
        self.uncounted[(level, key)] += 1

    def merge(self, other):
        for k, c in other.det.items():
            self.det[k].update(c)
        for k, c in other.gave_up.items():
            self.gave_up[k].update(c)
        self.uncounted.update(other.uncounted)


def excess_feasible(excess, groups):
    """Whether the server's excess counts (code -> n, beyond the determinate ones) can be explained
    by the gave-up calls: `groups` maps frozenset(allowed codes) -> number of calls, each of which
    was counted at most once with one of its allowed codes. Hall's condition over every set of codes
    with a positive excess (a bipartite matching exists iff it holds). Returns (ok, reason)."""
    codes = [c for c, n in excess.items() if n > 0]
    for c, n in excess.items():
        if n < 0:
            return False, f"server counted {-n} fewer {c} than the client received"
    for r in range(1, len(codes) + 1):
        for subset in itertools.combinations(codes, r):
            need = sum(excess[c] for c in subset)
            have = sum(n for allowed, n in groups.items() if allowed & set(subset))
            if need > have:
                return False, (f"server counted {need} more {'/'.join(subset)} than the client received "
                               f"and only {have} given-up calls could have ended so")
    return True, ""


def reconcile_level(name, det, groups, server):
    """One row of the table and its violations: det/server are code -> n, groups allowed -> n."""
    excess = collections.Counter(server)
    excess.subtract(det)
    ok, reason = excess_feasible(dict(excess), dict(groups))
    row = {"what": name, "client_det": dict(det), "gave_up": sum(groups.values()),
           "server": dict(server), "reached": sum(max(0, v) for v in excess.values()), "ok": ok}
    return row, ([] if ok else [f"{name}: {reason} (client {dict(det)}, server {dict(server)})"])


def reconcile(tally, counts, open_streams=0):
    """Rows for the summary table and the list of violations (empty = exact agreement).

    open_streams: ModelStreamInfer RPCs the client deliberately left open at the scrape: up to that
    many may be started on the server and not yet handled (they are tallied as gave_up)."""
    rows, violations = [], []
    rpc_keys = {k for (lvl, k) in list(tally.det) + list(tally.gave_up) if lvl == "rpc"}
    rpc_keys |= set(counts.handled) | set(counts.started)
    for key in sorted(rpc_keys):
        det, groups = tally.det.get(("rpc", key), {}), tally.gave_up.get(("rpc", key), {})
        row, v = reconcile_level(f"rpc {key[1]}", det, groups, counts.handled.get(key, {}))
        rows.append(row)
        violations += v
        handled = sum(counts.handled.get(key, {}).values())
        may_be_open = open_streams if key == (KSERVE, STREAM_METHOD) else 0
        unfinished = counts.started.get(key, 0) - handled
        if not 0 <= unfinished <= may_be_open:
            violations.append(f"rpc {key[1]}: server started {counts.started.get(key, 0)}, handled "
                              f"{handled} ({may_be_open} deliberately left open): "
                              + (f"{unfinished - may_be_open} RPCs never finished" if unfinished > 0
                                 else f"{-unfinished} handled without being started"))
    det = tally.det.get(("msg", STREAM_METHOD), {})
    groups = tally.gave_up.get(("msg", STREAM_METHOD), {})
    row, v = reconcile_level(f"msg {STREAM_METHOD}", det, groups, counts.requests.get(STREAM_METHOD, {}))
    rows.append(row)
    violations += v
    for method in REST_METHODS:
        det, groups = tally.det.get(("req", method), {}), tally.gave_up.get(("req", method), {})
        row, v = reconcile_level(f"req {method}", det, groups, counts.requests.get(method, {}))
        rows.append(row)
        violations += v
    violations += unary_consistency(counts)
    for (lvl, key), n in sorted(tally.uncounted.items()):
        rows.append({"what": f"uncounted {key[1] if isinstance(key, tuple) else key}", "client_det": {},
                     "gave_up": 0, "server": {}, "reached": 0, "ok": True, "uncounted": n})
    return rows, violations


def unary_consistency(counts):
    """reformer_requests_total{method} == grpc_server_handled_total{method} for unary inference
    and Generate."""
    out = []
    for method in REQUESTS_EQUAL_HANDLED:
        a = {c: n for c, n in counts.requests.get(method, {}).items() if n}
        b = {c: n for c, n in counts.handled.get((_service_of(method), method), {}).items() if n}
        if a != b:
            out.append(f"{method}: reformer_requests_total {a} != grpc_server_handled_total {b}")
    return out


def _service_of(method):
    return KSERVE if method == "ModelInfer" else "reformer.v1.ReformerService"


def format_rows(rows):
    """The reconciliation table as text."""
    def codes(d):
        return " ".join(f"{c}={n}" for c, n in sorted(d.items()) if n) or "-"
    lines = [f"{'counter':<34} {'client (server-decided)':<44} {'gave up':>7} {'reached':>7}  "
             f"{'server':<44} ok"]
    for r in rows:
        if "uncounted" in r:
            lines.append(f"{r['what']:<34} {'(refused by gRPC before any handler)':<44} "
                         f"{r['uncounted']:>7} {0:>7}  {'-':<44} yes")
            continue
        lines.append(f"{r['what']:<34} {codes(r['client_det']):<44} {r['gave_up']:>7} {r['reached']:>7}  "
                     f"{codes(r['server']):<44} {'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)
