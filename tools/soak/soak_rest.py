"""The soak's REST inference client: POST /v2/models/{name}/infer (KServe v2 JSON) over plain
asyncio sockets, beside the gRPC load (README.md, "What it sends").

Every POST to .../infer reaches the REST handler, which counts it once in
reformer_requests_total{method="REST.ModelInfer"} with the status code it answered with
(server/http/rest_infer.cc), so these calls are reconciled at the "req" level against that counter.
The HTTP status maps back to one code (server/http/rest_infer.cc HttpStatusOf); the malformed cases
sent here are ones the server refuses as INVALID_ARGUMENT (400) or NOT_FOUND (404).
"""

import asyncio
import json
import math

REST_METHOD = "REST.ModelInfer"
HTTP_CODES = {200: "OK", 400: "InvalidArgument", 404: "NotFound", 413: "ResourceExhausted", 499: "Canceled",
              500: "Internal", 501: "Unimplemented", 503: "Unavailable", 504: "DeadlineExceeded"}
MAX_REST_TOKENS = 4096  # one document of JSON numbers (about 20 KB)


async def http_post(host, port, path, body, timeout, leave_after=None):
    """(status, body bytes) of one HTTP/1.1 POST with Connection: close; with `leave_after` the
    client closes the connection that many seconds after sending, without reading (None, b"")."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
        await writer.drain()
        if leave_after is not None:
            await asyncio.sleep(leave_after)
            return None, b""
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        rest = dechunk(rest)
    return status, rest


def dechunk(data):
    out, at = b"", 0
    while True:
        line_end = data.index(b"\r\n", at)
        n = int(data[at:line_end].split(b";")[0], 16)
        if n == 0:
            return out
        out += data[line_end + 2:line_end + 2 + n]
        at = line_end + 2 + n + 2


def infer_body(ctx, n, outputs, req_id, timeout_us=None, bad_id=False):
    ids = [int(x) for x in ctx.gen.ids(n)]
    if bad_id:
        ids[ctx.rng.randrange(n)] = ctx.facts.vocab
    body = {"id": req_id, "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [1, n], "data": ids}],
            "outputs": [{"name": o} for o in outputs]}
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return json.dumps(body).encode()


def check_rest_answer(ctx, body, n, outputs, req_id):
    """A problem with a 200 answer, or ''."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        return f"not JSON: {e}"
    if doc.get("id") != req_id:
        return f"id {doc.get('id')!r}, sent {req_id!r}"
    got = {o.get("name"): o for o in doc.get("outputs", [])}
    if sorted(got) != sorted(outputs):
        return f"outputs {sorted(got)}, requested {sorted(outputs)}"
    if "token_logprobs" in got:
        o = got["token_logprobs"]
        data = o.get("data", [])
        if o.get("shape") != [1, n] or len(data) != n:
            return f"token_logprobs shape {o.get('shape')} with {len(data)} values for {n} tokens"
        if any(not math.isfinite(v) or v > 1e-6 for v in data):
            return "token_logprobs not finite or > 0"
    if "embedding" in got:
        o = got["embedding"]
        if o.get("shape") != [1, ctx.facts.embedding] or len(o.get("data", [])) != ctx.facts.embedding:
            return f"embedding shape {o.get('shape')}, expected [1, {ctx.facts.embedding}]"
    return ""


async def rest_call(ctx, http, index, n_call, malformed):
    """One REST inference of a random kind; tallies it (level "req") and checks a 200 answer."""
    host, port = http
    name, path = ctx.facts.name, f"/v2/models/{ctx.facts.name}/infer"
    n = max(1, min(ctx.gen.total_tokens(), MAX_REST_TOKENS, ctx.facts.context))
    outputs = ctx.rng.choice([("token_logprobs",), ("embedding",), ("token_logprobs", "embedding")])
    req_id, kind, expected = f"h{index}-{n_call}", "rest", {"OK", "Unavailable"}
    timeout_us, bad_id, leave = None, False, None
    r = ctx.rng.random()
    if malformed and r < 0.10:
        kind, expected = "rest:bad", {"InvalidArgument"}
        choice = ctx.rng.randrange(3)
        if choice == 0:
            bad_id, kind = True, "rest:bad_id"
        elif choice == 1:
            path, kind, expected = f"/v2/models/{name}-nope/infer", "rest:unknown_model", {"NotFound"}
    elif r < 0.20:
        timeout_us, kind = ctx.rng.randint(500, 30000), "rest+timeout"
        expected = expected | {"DeadlineExceeded"}
    elif r < 0.30:
        leave, kind = ctx.rng.uniform(0.0, 1.5), "rest:client_leaves"
    body = infer_body(ctx, n, outputs, req_id, timeout_us, bad_id)
    if kind == "rest:bad" and ctx.rng.random() < 0.5:
        body, kind = body[:len(body) // 2], "rest:truncated_json"
    elif kind == "rest:bad":
        body, kind = b'{"inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [1, 2]}]}', "rest:no_data"
    expected |= ctx.extra_expected
    try:
        status, answer = await http_post(host, port, path, body, timeout=600, leave_after=leave)
    except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
        ctx.stats[kind]["(no HTTP answer)"] += 1
        ctx.tally.add_gave_up("req", REST_METHOD, expected | {"Canceled"})
        if "Unavailable" not in ctx.extra_expected:  # draining, the port may close: not a finding
            ctx.findings.add("REST call failed (no HTTP answer)", f"{kind}: {e!r}")
        else:
            await asyncio.sleep(0.2)
        return
    if leave is not None:
        ctx.stats[kind]["(left)"] += 1
        ctx.tally.add_gave_up("req", REST_METHOD, expected | {"Canceled"})
        return
    code = HTTP_CODES.get(status, f"HTTP{status}")
    record_rest(ctx, kind, code, status, answer, expected, (n, outputs, req_id))
    return code


def record_rest(ctx, kind, code, status, answer, expected, sent):
    n, outputs, req_id = sent
    ctx.stats[kind][code] += 1
    ctx.tally.add_det("req", REST_METHOD, code)
    if code not in expected:
        ctx.findings.add("unexpected status code", f"{kind}: HTTP {status} {answer[:160]!r}")
    elif code == "OK":
        problem = check_rest_answer(ctx, answer, n, outputs, req_id)
        if problem:
            ctx.findings.add("wrong answer", f"{kind} ({n} tokens): {problem}")


async def rest_worker(ctx, stop, http, malformed, index=0):
    """A closed-loop REST client: valid inferences with timeouts and clients that leave early, and
    (after the warm-up) malformed bodies and an unknown model."""
    n = 0
    while not stop.is_set():
        if await rest_call(ctx, http, index, n, malformed) == "Unavailable":
            await asyncio.sleep(ctx.rng.uniform(0.05, 0.2))  # back off, as clients should
        n += 1
