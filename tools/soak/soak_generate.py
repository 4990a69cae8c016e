"""The soak's Generate client: reformer.v1.ReformerService/Generate (server streaming) with the
faults a streaming client brings: it cancels mid-stream, its deadline fires mid-generation, it stops
reading for seconds (README.md, "What it sends").

Generate is a gRPC method, so each call is reconciled at the "rpc" level against
grpc_server_handled_total, and reformer_requests_total{method="Generate"} must equal it code by code
(server/grpc/generate_reactor.cc counts both when the call finishes).
"""

import asyncio

import grpc

import soak_traffic as tr

GENERATE = ("reformer.v1.ReformerService", "Generate")
MAX_PROMPT = 256
MAX_NEW = 32


def generate_request(ctx, bad=None):
    v1 = ctx.s.v1
    n = max(1, min(int(ctx.gen.total_tokens()) % MAX_PROMPT + 1, ctx.facts.context - MAX_NEW))
    ids = [int(x) for x in ctx.gen.ids(n)]
    req = v1.GenerateRequest(max_new_tokens=ctx.rng.randint(1, MAX_NEW), ignore_eos=ctx.rng.random() < 0.5)
    if ctx.rng.random() < 0.5:
        req.temperature, req.top_k, req.seed = 0.8, ctx.rng.choice([0, 40]), ctx.rng.randint(1, 1 << 30)
    if bad == "empty_prompt":
        return req
    if bad == "bad_id":
        ids[ctx.rng.randrange(n)] = ctx.facts.vocab
    elif bad == "zero_new_tokens":
        req.max_new_tokens = 0
    elif bad == "over_context":
        req.max_new_tokens = ctx.facts.context
    req.prompt.ids.ids.extend(ids)
    return req


def check_generation(ctx, req, msgs):
    """A problem with an OK stream, or ''."""
    if not msgs:
        return "no message"
    if any(m.finish_reason for m in msgs[:-1]) or not msgs[-1].finish_reason:
        return f"finish_reason on messages {[int(m.finish_reason) for m in msgs]}"
    tokens = [t for m in msgs for t in m.token_ids]
    if not 1 <= len(tokens) <= req.max_new_tokens or any(not 0 <= t < ctx.facts.vocab for t in tokens):
        return f"{len(tokens)} tokens for max_new_tokens {req.max_new_tokens}"
    if msgs[-1].usage.generated_tokens != len(tokens) or msgs[-1].usage.prompt_tokens != len(req.prompt.ids.ids):
        return f"usage {msgs[-1].usage} for {len(tokens)} tokens"
    if req.ignore_eos and len(tokens) != req.max_new_tokens:
        return f"ignore_eos: {len(tokens)} tokens, asked {req.max_new_tokens}"
    return ""


async def read_some(call, limit, stall_s):
    """Up to `limit` messages (None = to the end); (messages, end code or None, stalled)."""
    msgs = []
    while limit is None or len(msgs) < limit:
        try:
            m = await asyncio.wait_for(call.read(), stall_s)
        except asyncio.TimeoutError:
            return msgs, None, True
        except grpc.aio.AioRpcError as e:
            return msgs, tr.label(e.code()), False
        if m is grpc.aio.EOF:
            return msgs, None, False
        msgs.append(m)
    return msgs, None, False


async def generate_call(ctx, ch, malformed):
    """One Generate call in one of five modes; tallied at the rpc level."""
    stub = ctx.s.v1g.ReformerServiceStub(ch)
    bad = None
    if malformed and ctx.rng.random() < 0.1:
        bad = ctx.rng.choice(["empty_prompt", "bad_id", "zero_new_tokens", "over_context"])
    mode = "bad" if bad else ctx.rng.choices(["read", "cancel", "deadline", "slow_reader", "slow_cancel"],
                                             [0.45, 0.15, 0.15, 0.15, 0.10])[0]
    req = generate_request(ctx, bad)
    timeout = ctx.rng.uniform(0.02, 2.0) if mode == "deadline" else tr.SAFETY_S
    call = stub.Generate(req, timeout=timeout)
    gave_up = mode in ("cancel", "slow_cancel")
    if mode.startswith("slow"):
        first, _, _ = await read_some(call, 1, ctx.stall_s)
        await asyncio.sleep(ctx.rng.uniform(1.0, 4.0))   # stops reading; the server must hold on
        msgs, end, stalled = await read_some(call, None if mode == "slow_reader" else 0, ctx.stall_s)
        msgs = first + msgs
    else:
        msgs, end, stalled = await read_some(call, ctx.rng.randint(0, 2) if gave_up else None, ctx.stall_s)
    if gave_up or stalled:
        call.cancel()
    code = end or await tr._final_code(call)
    kind = f"generate:{bad or mode}"
    ctx.stats[kind][code] += 1
    record(ctx, kind, req, msgs, code, gave_up, stalled, deadline=mode == "deadline", bad=bad)


def record(ctx, kind, req, msgs, code, gave_up, stalled, deadline, bad):
    allowed = {"OK", "Canceled"} | ctx.extra_expected
    if gave_up or stalled:
        ctx.tally.add_gave_up("rpc", GENERATE, allowed)
        if stalled:
            ctx.findings.add("stream stalled (no answer, no end)", f"{kind}: {len(msgs)} messages read")
        return
    if deadline and code == "DeadlineExceeded":   # the client's timer or the server's: unknowable
        ctx.tally.add_gave_up("rpc", GENERATE, allowed | {"DeadlineExceeded"})
        return
    ctx.tally.add_det("rpc", GENERATE, code)
    expected = ({"InvalidArgument", "OutOfRange"} if bad else {"OK"}) | ctx.extra_expected
    if code not in expected:
        ctx.findings.add("unexpected status code", f"{kind}: {code}")
    elif code == "OK":
        problem = check_generation(ctx, req, msgs)
        if problem:
            ctx.findings.add("wrong answer", f"{kind}: {problem}")


async def generate_worker(ctx, stop, malformed):
    ch = ctx.channel()
    try:
        while not stop.is_set():
            await generate_call(ctx, ch, malformed)
    finally:
        await ch.close()
