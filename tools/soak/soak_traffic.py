"""The soak's clients (asyncio + grpc.aio, one thread): each role loops until its phase stops.

Every call ends in exactly one entry of the phase's Tally (soak_reconcile.py explains the classes)
and one entry of `stats` (kind -> code -> n). A code outside the call's expected set, a wrong
answer, a canary that changed, a stream response lost or duplicated, a call that hung: a Finding.
"""

import asyncio
import collections
import random
import time

import grpc

import soak_h2
import soak_wire
from soak_reconcile import CODE_LABELS, KSERVE, STREAM_METHOD, Tally

SAFETY_S = 600          # no call the soak makes may take longer: beyond it, the call "hung"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30),
                   ("grpc.use_local_subchannel_pool", 1)]  # each channel its own TCP connection


class Findings:
    """Violations by category: a count and the first few examples."""

    def __init__(self):
        self.count = collections.Counter()
        self.samples = collections.defaultdict(list)

    def add(self, category, detail):
        self.count[category] += 1
        if len(self.samples[category]) < 4:
            self.samples[category].append(detail)

    def lines(self):
        out = []
        for cat, n in sorted(self.count.items()):
            out.append(f"{cat}: {n}")
            out += [f"    e.g. {s}" for s in self.samples[cat]]
        return out


class Ctx:
    """What every role shares within one phase."""

    def __init__(self, stubs, facts, gen, target, findings, canaries, extra_expected=frozenset()):
        self.s, self.facts, self.gen, self.target = stubs, facts, gen, target
        self.findings, self.canaries = findings, canaries
        self.extra_expected = frozenset(extra_expected)  # e.g. Unavailable while draining
        self.tally = Tally()
        self.stats = collections.defaultdict(collections.Counter)
        self.sec_per_token = 0.00015
        self.stall_s = 60.0  # a stream that gives no answer and no end for this long has stalled
        self.rng = random.Random(int(gen.rng.integers(1 << 30)))

    def channel(self):
        return grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    def method(self, ch, spec):
        if spec.raw_method:
            return ch.unary_unary(spec.raw_method)
        if spec.method in ("Score", "Embed", "GetModelInfo", "Tokenize"):
            return getattr(self.s.v1g.ReformerServiceStub(ch), spec.method)
        return getattr(self.s.pbg.GRPCInferenceServiceStub(ch), spec.method)


def label(code):
    return CODE_LABELS.get(code.name, code.name)


# ------------------------------------------------------------------------------------ unary calls
async def call_unary(ctx, ch, spec, grpc_timeout=None, cancel_after=None, killable=False):
    """Makes one unary call and records its outcome (see the module docstring)."""
    call = ctx.method(ch, spec)(spec.request, timeout=grpc_timeout or SAFETY_S)
    canceller = None
    if cancel_after is not None:
        canceller = asyncio.ensure_future(_cancel_later(call, cancel_after))
    start = time.monotonic()
    resp, details = None, ""
    try:
        resp = await call
        code = "OK"
    except grpc.aio.AioRpcError as e:
        code, details = label(e.code()), e.details() or ""
    except asyncio.CancelledError:
        code = "Canceled"
    if canceller is not None:
        canceller.cancel()
    record_unary(ctx, spec, code, details, time.monotonic() - start,
                 gave_up_cancel=cancel_after is not None or killable, tight=grpc_timeout is not None)
    if resp is not None and not spec.raw_method:
        check_answer(ctx, spec, resp)
    return code


async def _cancel_later(call, delay):
    await asyncio.sleep(delay)
    call.cancel()


def record_unary(ctx, spec, code, details, seconds, gave_up_cancel, tight):
    key = (soak_wire.service_of(spec), spec.method)
    expected = spec.expected | ctx.extra_expected
    ctx.stats[spec.kind][code] += 1
    if code == "Canceled" and gave_up_cancel:
        ctx.tally.add_gave_up("rpc", key, expected | {"Canceled"})
    elif code == "DeadlineExceeded" and (tight or seconds >= SAFETY_S - 1):
        ctx.tally.add_gave_up("rpc", key, expected | {"DeadlineExceeded", "Canceled"})
        if not tight:
            ctx.findings.add("call hung (no answer within the safety deadline)", f"{spec.kind}")
    elif code in spec.uncounted:
        ctx.tally.add_uncounted("rpc", key)
    else:
        ctx.tally.add_det("rpc", key, code)
        if code not in expected:
            ctx.findings.add("unexpected status code",
                             f"{spec.kind}: {code} {details[:160]!r} (expected {'/'.join(sorted(expected))})")


def check_answer(ctx, spec, resp):
    problem, dig = soak_wire.check_response(spec, resp, ctx.facts)
    if problem:
        ctx.findings.add("wrong answer", f"{spec.kind} ({spec.tokens} tokens): {problem}")
        return
    if spec.method == "ModelInfer" and spec.tokens >= 256 and "compute_ms" in resp.parameters:
        per = resp.parameters["compute_ms"].double_param / 1e3 / spec.tokens
        ctx.sec_per_token = 0.9 * ctx.sec_per_token + 0.1 * per
    if spec.canary:
        first = ctx.canaries.setdefault(spec.canary, dig)
        if first != dig:
            ctx.findings.add("canary changed (batch invariance)", f"{spec.canary}: {first} then {dig}")


def with_deadline(ctx, spec):
    """Gives a valid call one of the deadline/cancel variants; returns (grpc_timeout, cancel_after)."""
    r = ctx.rng.random()
    est = max(0.01, spec.tokens * ctx.sec_per_token)
    if r < 0.10 and spec.method == "ModelInfer":            # expires in the queue (server decides)
        set_timeout_param(spec, ctx.rng.uniform(0.0005, 0.03))
    elif r < 0.20 and spec.method == "ModelInfer":          # expires mid-compute (server decides)
        set_timeout_param(spec, est * ctx.rng.uniform(0.3, 1.5))
    elif r < 0.26:                                          # the client's own deadline
        return ctx.rng.uniform(0.005, 1.5 * est + 0.005), None
    elif r < 0.34:                                          # the client cancels
        return None, ctx.rng.uniform(0.0, min(2.0, 1.2 * est))
    return None, None


def set_timeout_param(spec, seconds):
    spec.request.parameters["timeout"].int64_param = max(1, int(seconds * 1e6))
    spec.expected = spec.expected | {"DeadlineExceeded"}
    spec.timeout_param = True
    spec.kind += "+timeout"


async def valid_worker(ctx, stop, index):
    ch = ctx.channel()
    n = 0
    try:
        while not stop.is_set():
            spec = ctx.gen.valid()
            if spec.method == "ModelInfer":
                spec.request.id = f"v{index}-{n}"
            n += 1
            grpc_timeout, cancel_after = (None, None) if spec.canary else with_deadline(ctx, spec)
            if await call_unary(ctx, ch, spec, grpc_timeout, cancel_after) == "Unavailable":
                await asyncio.sleep(ctx.rng.uniform(0.05, 0.2))  # back off, as clients should
    finally:
        await ch.close()


async def priming_burst(ctx, count):
    """`count` largest requests at once: the working-memory peak is reached during the warm-up."""
    ch = ctx.channel()
    try:
        specs = [ctx.gen.valid("ModelInfer", ctx.gen.max_tokens) for _ in range(count)]
        await asyncio.gather(*(call_unary(ctx, ch, s) for s in specs))
    finally:
        await ch.close()


async def malformed_worker(ctx, stop, skip):
    ch = ctx.channel()
    cases = [(n, b) for n, b in soak_wire.malformed_cases(ctx.gen) if n not in skip]
    try:
        while not stop.is_set():
            ctx.rng.shuffle(cases)
            for _, build in cases:
                if stop.is_set():
                    break
                await call_unary(ctx, ch, build())
                await asyncio.sleep(ctx.rng.uniform(0.05, 0.4))
    finally:
        await ch.close()


# ---------------------------------------------------------------------------------------- streams
def stream_messages(ctx, n, prefix, bad_cases):
    """`n` ModelStreamInfer messages: valid ones (<= 4096 tokens, some with a timeout) and ~20 %
    malformed ones; each with a unique id."""
    out = []
    for i in range(n):
        if bad_cases and ctx.rng.random() < 0.2:
            spec = ctx.rng.choice(bad_cases)()
        else:
            spec = ctx.gen.valid("ModelInfer", min(ctx.gen.total_tokens(), 4096))
            r = ctx.rng.random()
            if r < 0.1:
                set_timeout_param(spec, ctx.rng.uniform(0.0005, 0.03))
            elif r < 0.2:
                set_timeout_param(spec, spec.tokens * ctx.sec_per_token * ctx.rng.uniform(0.3, 1.5))
        spec.request.id = f"{prefix}-{i}"
        spec.kind = "stream:" + spec.kind
        out.append(spec)
    return out


def stream_bad_cases(ctx, skip):
    if "*" in skip:
        return []
    return [b for n, b in soak_wire.malformed_cases(ctx.gen)
            if n not in skip and not n.startswith("raw_") and b().method == "ModelInfer"]


class StreamState:
    """One ModelStreamInfer call from the client's side: what was sent, what was answered."""

    def __init__(self, ctx, msgs):
        self.ctx, self.msgs = ctx, {m.request.id: m for m in msgs}
        self.sent, self.answered = [], set()

    def on_response(self, resp):
        ctx = self.ctx
        rid = resp.infer_response.id
        spec = self.msgs.get(rid)
        if spec is None or rid not in self.sent or rid in self.answered:
            what = "duplicated" if rid in self.answered else "for an id never sent"
            ctx.findings.add("stream response unknown or duplicated",
                             f"response {what}: id {rid!r}, error_message {resp.error_message[:160]!r}")
            return
        self.answered.add(rid)
        code = error_code(resp.error_message)
        expected = spec.expected | ctx.extra_expected
        ctx.stats[spec.kind][code] += 1
        ctx.tally.add_det("msg", STREAM_METHOD, code)
        if code not in expected:
            ctx.findings.add("unexpected status code", f"{spec.kind}: {code} {resp.error_message[:160]!r}")
        elif code == "OK":
            check_answer(ctx, spec, resp.infer_response)

    def settle(self, gave_up):
        """Tallies the sent messages that got no answer."""
        for rid in self.sent:
            if rid in self.answered:
                continue
            spec = self.msgs[rid]
            self.ctx.stats[spec.kind]["(no answer)"] += 1
            self.ctx.tally.add_gave_up("msg", STREAM_METHOD, spec.expected | self.ctx.extra_expected | {"Canceled"})
            if not gave_up:
                self.ctx.findings.add("stream message never answered", f"{spec.kind} id {rid}")


def error_code(message):
    if not message:
        return "OK"
    name = message.split(":", 1)[0].strip()
    return CODE_LABELS.get(name, f"?{name}")


async def stream_session(ctx, ch, mode, msgs, hold=0.0):
    """mode: normal (send all, half-close, read all), cancel (read some, cancel), hold_drain /
    hold_cancel (send all, read nothing for `hold` seconds, then read all / cancel)."""
    call = ctx.s.pbg.GRPCInferenceServiceStub(ch).ModelStreamInfer(timeout=SAFETY_S)
    st = StreamState(ctx, msgs)
    writer = asyncio.ensure_future(_write_all(call, st, msgs, half_close=mode in ("normal", "hold_drain")))
    gave_up = mode in ("cancel", "hold_cancel")
    if mode.startswith("hold"):
        await asyncio.sleep(hold)
    limit = len(msgs) if not gave_up else (ctx.rng.randint(0, len(msgs)) if mode == "cancel" else 0)
    stalled = await _read_responses(call, st, limit, wait_end=not gave_up)
    if gave_up or stalled:
        call.cancel()
    writer.cancel()
    code = await _final_code(call)
    key = (KSERVE, STREAM_METHOD)
    ctx.stats["stream:" + mode][code] += 1
    if gave_up or stalled:
        ctx.tally.add_gave_up("rpc", key, {"OK", "Canceled"} | ctx.extra_expected)
        if stalled:
            ctx.findings.add("stream stalled (no answer, no end)",
                             f"mode {mode}, {len(st.answered)}/{len(msgs)} answered")
    else:
        ctx.tally.add_det("rpc", key, code)
        if code != "OK":
            ctx.findings.add("unexpected status code", f"stream {mode}: {code}")
    st.settle(gave_up or stalled)


async def _write_all(call, st, msgs, half_close):
    try:
        for spec in msgs:
            st.sent.append(spec.request.id)   # before the write: a cancelled write may still arrive
            await call.write(spec.request)
        if half_close:
            await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        pass


async def _read_responses(call, st, limit, wait_end):
    """Reads until `limit` answers or the end (then, when `wait_end`, also the end of the stream);
    True when the stream stalled."""
    n = 0
    while n < limit:
        try:
            resp = await asyncio.wait_for(call.read(), st.ctx.stall_s)
        except asyncio.TimeoutError:
            return True
        except grpc.aio.AioRpcError:
            return False
        if resp is grpc.aio.EOF:
            return False
        st.on_response(resp)
        n += 1
    if wait_end:   # everything answered: the stream must end (the client half-closed)
        try:
            resp = await asyncio.wait_for(call.read(), st.ctx.stall_s)
        except asyncio.TimeoutError:
            return True
        except grpc.aio.AioRpcError:
            return False
        if resp is not grpc.aio.EOF:
            st.on_response(resp)
    return False


async def _final_code(call, timeout=30):
    try:
        return label(await asyncio.wait_for(call.code(), timeout))
    except asyncio.TimeoutError:
        return "(no status)"
    except asyncio.CancelledError:
        return "Canceled"


async def stream_worker(ctx, stop, skip, index=0):
    ch = ctx.channel()
    bad = stream_bad_cases(ctx, skip)
    n = 0
    try:
        while not stop.is_set():
            mode = ctx.rng.choices(["normal", "cancel", "hold_drain", "hold_cancel"], [0.5, 0.2, 0.15, 0.15])[0]
            msgs = stream_messages(ctx, ctx.rng.randint(1, 12), f"s{index}-{n}", bad)
            n += 1
            await stream_session(ctx, ch, mode, msgs, hold=ctx.rng.uniform(1.0, 4.0))
    finally:
        await ch.close()


# ------------------------------------------------------------------------------- rude clients
async def rude_worker(ctx, stop):
    """Abrupt disconnects: TCP resets mid-call (unary and stream), channels closed mid-call."""
    n = 0
    while not stop.is_set():
        kind = ctx.rng.choices(["reset_unary", "reset_stream", "kill_channel"], [0.4, 0.3, 0.3])[0]
        try:
            if kind == "kill_channel":
                await kill_channel(ctx)
            else:
                await tcp_reset(ctx, stream=kind == "reset_stream", prefix=f"r{n}")
        except (OSError, asyncio.TimeoutError) as e:
            ctx.findings.add("rude client could not connect or send", f"{kind}: {e!r}")
        n += 1
        await asyncio.sleep(ctx.rng.uniform(0.2, 1.0))


async def tcp_reset(ctx, stream, prefix):
    host, port = ctx.target.rsplit(":", 1)
    conn = soak_h2.RudeConnection(host.strip("[]"), int(port))
    await conn.open()
    path = f"/{KSERVE}/" + ("ModelStreamInfer" if stream else "ModelInfer")
    calls = 1 if stream else ctx.rng.randint(1, 3)
    sent = []
    try:
        for c in range(calls):
            msgs = [ctx.gen.valid("ModelInfer", min(ctx.gen.total_tokens(), 12288))
                    for _ in range(ctx.rng.randint(2, 8) if stream else 1)]
            for i, m in enumerate(msgs):
                m.request.id = f"{prefix}-{c}-{i}"
            sent.append(msgs)   # before sending: a partly sent call may still reach the server
            await conn.start_call(path, [m.request.SerializeToString() for m in msgs], end_stream=not stream)
        await asyncio.sleep(ctx.rng.uniform(0.0, 1.5))
    finally:
        conn.reset()
    kind = "reset_stream" if stream else "reset_unary"
    for msgs in sent:
        ctx.stats[kind]["(reset)"] += 1
        ctx.tally.add_gave_up("rpc", (KSERVE, path.rsplit("/", 1)[1]), {"OK", "Canceled"} | ctx.extra_expected)
        if stream:
            for m in msgs:
                ctx.tally.add_gave_up("msg", STREAM_METHOD, {"OK", "Canceled"} | ctx.extra_expected)


async def kill_channel(ctx):
    """Closes a channel while 1-4 calls on it are in flight (grpc.aio cancels them)."""
    ch = ctx.channel()
    specs = [ctx.gen.valid() for _ in range(ctx.rng.randint(1, 4))]
    for s in specs:
        s.kind = "kill_channel:" + s.kind
        s.canary = ""
    tasks = [asyncio.ensure_future(call_unary(ctx, ch, s, killable=True)) for s in specs]
    await asyncio.sleep(ctx.rng.uniform(0.0, 1.0))
    await ch.close()
    await asyncio.gather(*tasks)


# ------------------------------------------------------------------------- control and probes
def control_specs(ctx):
    pb, v1, name = ctx.s.pb, ctx.s.v1, ctx.facts.name
    ok = frozenset({"OK"})
    out = [soak_wire.Spec("ctl_ServerLive", "ServerLive", pb.ServerLiveRequest(), ok),
           soak_wire.Spec("ctl_ServerReady", "ServerReady", pb.ServerReadyRequest(), ok),
           soak_wire.Spec("ctl_ModelReady", "ModelReady", pb.ModelReadyRequest(name=name), ok),
           soak_wire.Spec("ctl_ServerMetadata", "ServerMetadata", pb.ServerMetadataRequest(), ok),
           soak_wire.Spec("ctl_ModelMetadata", "ModelMetadata", pb.ModelMetadataRequest(name=name), ok),
           soak_wire.Spec("ctl_ModelConfig", "ModelConfig", pb.ModelConfigRequest(name=name), ok),
           soak_wire.Spec("ctl_ModelStatistics", "ModelStatistics", pb.ModelStatisticsRequest(name=name), ok),
           soak_wire.Spec("ctl_GetModelInfo", "GetModelInfo", v1.GetModelInfoRequest(), ok),
           soak_wire.Spec("ctl_health", "Check", b"", ok, uncounted=frozenset(CODE_LABELS.values()),
                          raw_method="/grpc.health.v1.Health/Check")]
    if ctx.facts.tokenizer:
        out.append(soak_wire.Spec("ctl_Tokenize", "Tokenize", v1.TokenizeRequest(texts=["In the beginning"]), ok))
    return out


async def control_worker(ctx, stop, expect_ready=True):
    ch = ctx.channel()
    specs = control_specs(ctx)
    try:
        while not stop.is_set():
            spec = ctx.rng.choice(specs)
            call = ctx.method(ch, spec)
            try:
                resp = await call(spec.request, timeout=30)
                code = "OK"
                if spec.method == "ServerReady" and expect_ready is not None and resp.ready != expect_ready:
                    ctx.findings.add("readiness wrong", f"ServerReady.ready={resp.ready}, expected {expect_ready}")
            except grpc.aio.AioRpcError as e:
                code = label(e.code())
            record_unary(ctx, spec, code, "", 0.0, gave_up_cancel=False, tight=True)
            await asyncio.sleep(ctx.rng.uniform(0.3, 1.5))
    finally:
        await ch.close()


async def http_get(host, port, path, timeout=10.0):
    """(status, body) of a plain HTTP/1.0 GET."""
    async def get():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace")
    return await asyncio.wait_for(get(), timeout)


async def probe_worker(ctx, stop, http, ready_status=200):
    """/healthz, /readyz, /metrics must answer (within 10 s) beside the load."""
    host, port = http
    while not stop.is_set():
        for path, want in (("/healthz", 200), ("/readyz", ready_status), ("/metrics", 200)):
            try:
                status, _ = await http_get(host, port, path)
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
                status = repr(e)
            ctx.stats["http" + path][str(status)] += 1
            if status != want and not (want is None and status in (200, 503)):
                ctx.findings.add("HTTP probe failed", f"GET {path}: {status}, expected {want}")
        await asyncio.sleep(1.0)
