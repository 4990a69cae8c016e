"""What the soak sends and how it checks answers: stubs, valid requests, malformed cases.

Valid requests (ModelInfer raw INT32/INT64 with padding masks, typed contents, BYTES text; Score;
Embed) carry 1 to --max_tokens tokens, cut into documents of at most the model's context. Their
answers are checked for shape and size, and "canary" requests (fixed documents, sent again and again
beside random batch mates) must come back bitwise identical every time.

Malformed cases each name the one code the server must answer (the codes of proto/reformer.proto
and the README's API section) and, in `uncounted`, the codes with which the gRPC library itself
refuses them before any handler runs (such answers are never in the server's metrics).
"""

import dataclasses
import hashlib
import os
import struct
import sys
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KSERVE = "inference.GRPCInferenceService"
REFORMER = "reformer.v1.ReformerService"
OUTPUTS = ("logits", "hidden_states", "token_logprobs", "embedding")


def load_stubs(proto_dir):
    """Generates the Python stubs of proto/ into a temporary directory and imports them."""
    from grpc_tools import protoc  # Debian: python3-grpc-tools
    out = tempfile.mkdtemp(prefix="reformer-soak-")
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto_dir, "grpc_service.proto"), os.path.join(proto_dir, "reformer.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}")
    sys.path.insert(0, out)
    import grpc_service_pb2, grpc_service_pb2_grpc, reformer_pb2, reformer_pb2_grpc  # noqa: E401
    return Stubs(grpc_service_pb2, grpc_service_pb2_grpc, reformer_pb2, reformer_pb2_grpc)


@dataclasses.dataclass
class Stubs:
    pb: object
    pbg: object
    v1: object
    v1g: object


@dataclasses.dataclass
class ModelFacts:
    name: str
    vocab: int
    context: int
    embedding: int
    max_request_tokens: int
    causal: bool
    tokenizer: bool


@dataclasses.dataclass
class Spec:
    """One call to make. `expected`: the codes the server may answer (labels as in the metrics)."""
    kind: str
    method: str            # ModelInfer | Score | Embed | ModelStreamInfer(message) | other unary
    request: object
    expected: frozenset
    uncounted: frozenset = frozenset()  # codes that mean "refused by the gRPC library before any
                                        # handler": such an answer is never in the server's metrics
    tokens: int = 0
    outputs: tuple = ()
    text: bool = False
    rows: int = 0
    length: int = 0
    timeout_param: bool = False
    canary: str = ""
    raw_method: str = ""   # full method path for calls made with raw bytes


def service_of(spec):
    if spec.raw_method:
        return spec.raw_method.split("/")[1]
    return REFORMER if spec.method in ("Score", "Embed", "GetModelInfo", "Tokenize") else KSERVE


# ----------------------------------------------------------------------------------------- valid
class Generator:
    """Draws valid requests and malformed cases from one seeded random source."""

    def __init__(self, stubs, facts, seed, max_tokens, corpus):
        self.s, self.m = stubs, facts
        self.rng = np.random.default_rng(seed)
        self.max_tokens = max(1, min(max_tokens, facts.max_request_tokens))
        self.corpus = corpus
        self.canaries = self._make_canaries()

    def lengths(self, total):
        """Document lengths summing to `total`, each <= context (more documents now and then)."""
        n = -(-total // self.m.context)
        if total >= 2 * n and self.rng.random() < 0.3:
            n += int(self.rng.integers(1, min(4, total // n) + 1))
        n = min(n, total)
        cuts = np.sort(self.rng.choice(np.arange(1, total), size=n - 1, replace=False)) if n > 1 else []
        out = np.diff(np.concatenate([[0], cuts, [total]])).astype(int).tolist()
        while max(out) > self.m.context:  # rebalance: move tokens from the longest to the shortest
            i, j = int(np.argmax(out)), int(np.argmin(out))
            move = min(out[i] - self.m.context, self.m.context - out[j])
            out[i] -= move
            out[j] += move
        return out

    def total_tokens(self):
        """Log-uniform in [1, max_tokens]: mostly short, some long."""
        return int(np.exp(self.rng.uniform(0, np.log(self.max_tokens))) + 0.5) or 1

    def ids(self, n):
        return self.rng.integers(0, self.m.vocab, size=n, dtype=np.int64)

    def text(self, n):
        start = int(self.rng.integers(0, max(1, len(self.corpus) - n)))
        t = self.corpus[start:start + n]
        return t if len(t) == n else (t + b"a" * n)[:n]

    def pick_outputs(self, total):
        if total <= 2048:
            subsets = [(), ("logits",), ("hidden_states",), ("token_logprobs",), ("embedding",),
                       ("token_logprobs", "embedding"), ("logits", "embedding")]
        elif total <= 8192:
            subsets = [("token_logprobs",), ("embedding",), ("token_logprobs", "embedding"),
                       ("hidden_states",)]
        else:
            subsets = [("token_logprobs",), ("embedding",), ("token_logprobs", "embedding")]
        return subsets[int(self.rng.integers(len(subsets)))]

    def valid(self, method=None, total=None):
        """A valid request of a random method (weights: ModelInfer 0.6, Score 0.2, Embed 0.2)."""
        if method is None and total is None and self.rng.random() < 0.08:
            return self.canary()
        total = total or self.total_tokens()
        method = method or str(self.rng.choice(["ModelInfer", "Score", "Embed"], p=[0.6, 0.2, 0.2]))
        if method == "Score" and not self.m.causal:
            method = "Embed"
        lens = self.lengths(total)
        if method == "ModelInfer":
            return self.model_infer(lens, self.pick_outputs(total), self._infer_form(total))
        return self.v1_call(method, lens, use_text=self.m.tokenizer and self.rng.random() < 0.3)

    def _infer_form(self, total):
        forms, p = ["raw32", "raw64", "typed", "text"], [0.45, 0.2, 0.1, 0.25]
        form = str(self.rng.choice(forms, p=p))
        if form == "typed" and total > 4096:
            form = "raw32"
        if form == "text" and not self.m.tokenizer:
            form = "raw32"
        return form

    def model_infer(self, lens, outputs, form, docs=None, req_id=""):
        pb = self.s.pb
        req = pb.ModelInferRequest(model_name=self.m.name, id=req_id)
        if form == "text":
            texts = [self.text(n) for n in lens]
            req.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
            req.raw_input_contents.append(b"".join(struct.pack("<I", len(t)) + t for t in texts))
        else:
            self._add_ids(req, docs if docs is not None else [self.ids(n) for n in lens], form)
        for o in outputs:
            req.outputs.add(name=o)
        return Spec("infer_" + form, "ModelInfer", req, frozenset({"OK"}), tokens=sum(lens),
                    outputs=tuple(outputs), text=form == "text", rows=len(lens), length=max(lens))

    def _add_ids(self, req, docs, form):
        b, t = len(docs), max(len(d) for d in docs)
        ids = np.zeros((b, t), dtype=np.int64)
        mask = np.zeros((b, t), dtype=np.int64)
        for r, d in enumerate(docs):
            off = int(self.rng.integers(0, t - len(d) + 1)) if self.rng.random() < 0.3 else 0
            ids[r, off:off + len(d)] = d
            mask[r, off:off + len(d)] = 1
        padded = any(len(d) != t for d in docs)
        if form == "typed":
            ti = req.inputs.add(name="input_ids", datatype="INT64", shape=[b, t])
            ti.contents.int64_contents.extend(ids.ravel().tolist())
            if padded:
                tm = req.inputs.add(name="attention_mask", datatype="BOOL", shape=[b, t])
                tm.contents.bool_contents.extend(bool(v) for v in mask.ravel())
            return
        dt, np_dt = ("INT32", "<i4") if form == "raw32" else ("INT64", "<i8")
        req.inputs.add(name="input_ids", datatype=dt, shape=[b, t])
        req.raw_input_contents.append(ids.astype(np_dt).tobytes())
        if padded:
            req.inputs.add(name="attention_mask", datatype=dt, shape=[b, t])
            req.raw_input_contents.append(mask.astype(np_dt).tobytes())

    def v1_call(self, method, lens, use_text=False, docs=None):
        v1 = self.s.v1
        cls = v1.ScoreRequest if method == "Score" else v1.EmbedRequest
        req = cls()
        for i, n in enumerate(lens):
            d = req.documents.add()
            src = docs[i] if docs is not None else (self.text(n) if use_text else self.ids(n))
            if isinstance(src, bytes):
                d.text = src.decode("ascii")
            else:
                d.ids.ids.extend(int(x) for x in src)
        if method == "Score":
            req.return_token_logprobs = bool(self.rng.random() < 0.5)
        else:
            req.normalize = bool(self.rng.random() < 0.5)
        return Spec(method.lower() + ("_text" if use_text else "_ids"), method, req,
                    frozenset({"OK"}), tokens=sum(lens), rows=len(lens), text=use_text)

    # ------------------------------------------------------------------------------------ canaries
    def _make_canaries(self):
        rng = np.random.default_rng(12345)
        out = []
        for i, n in enumerate([1, 17, 333, 1500, min(4000, self.m.context)]):
            ids = rng.integers(0, self.m.vocab, size=n, dtype=np.int64)
            out.append((f"c{i}", n, ids))
        return out

    def canary(self):
        name, n, ids = self.canaries[int(self.rng.integers(len(self.canaries)))]
        which = int(self.rng.integers(3))
        if which == 0:
            outs = ("token_logprobs", "embedding") if n > 1024 else ("logits", "embedding")
            spec = self.model_infer([n], outs, "raw32", docs=[ids])
            spec.canary = f"{name}/infer/{'/'.join(outs)}"
        elif which == 1 and self.m.causal:
            spec = self.v1_call("Score", [n], docs=[ids])
            spec.request.return_token_logprobs = True
            spec.canary = f"{name}/score"
        else:
            spec = self.v1_call("Embed", [n], docs=[ids])
            spec.request.normalize = False
            spec.canary = f"{name}/embed"
        spec.kind = "canary"
        return spec


# -------------------------------------------------------------------------------------- answers
def digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
    return h.hexdigest()[:16]


def check_infer_response(spec, resp, facts):
    """'' when the ModelInfer answer fits the request (names, shapes, sizes), else what is wrong;
    and the canary digest of its outputs."""
    want = list(spec.outputs) or (list(OUTPUTS) + (["token_ids", "lengths"] if spec.text else []))
    names = [o.name for o in resp.outputs]
    if names != want:
        return f"outputs {names}, requested {want}", ""
    if len(resp.raw_output_contents) != len(names):
        return f"{len(resp.raw_output_contents)} raw outputs for {len(names)} tensors", ""
    b = spec.rows
    for o, raw in zip(resp.outputs, resp.raw_output_contents):
        shape = list(o.shape)
        width = {"logits": facts.vocab, "hidden_states": facts.embedding}.get(o.name)
        if o.name == "embedding":
            expect = [b, facts.embedding]
        elif o.name == "lengths":
            expect = [b]
        else:
            expect = [b, shape[1] if len(shape) > 1 else -1] + ([width] if width else [])
        if shape != expect or (not spec.text and len(shape) > 1 and o.name != "embedding"
                               and shape[1] != spec.length):
            return f"output {o.name} shape {shape}, expected {expect} (T={spec.length})", ""
        item = 8 if o.name == "token_ids" else 4
        if len(raw) != int(np.prod(shape)) * item:
            return f"output {o.name}: {len(raw)} bytes for shape {shape}", ""
        if o.name == "token_logprobs":
            lp = np.frombuffer(raw, dtype="<f4")
            if not np.all(np.isfinite(lp)) or np.any(lp > 1e-6):
                return "token_logprobs not finite or above 0", ""
    if resp.id != spec.request.id:
        return f"id {resp.id!r} echoed for {spec.request.id!r}", ""
    return "", digest(*resp.raw_output_contents)


def check_v1_response(spec, resp, facts):
    n = len(spec.request.documents)
    if spec.method == "Score":
        if len(resp.scores) != n:
            return f"{len(resp.scores)} scores for {n} documents", ""
        for s in resp.scores:
            if not np.isfinite(s.total_logprob) or s.total_logprob > 1e-6:
                return f"total_logprob {s.total_logprob}", ""
            if spec.request.return_token_logprobs and len(s.token_logprobs) != s.num_tokens:
                return f"{len(s.token_logprobs)} token_logprobs for {s.num_tokens} tokens", ""
        return "", digest(*[(s.num_tokens, s.total_logprob, tuple(s.token_logprobs)) for s in resp.scores])
    if len(resp.embeddings) != n:
        return f"{len(resp.embeddings)} embeddings for {n} documents", ""
    for e in resp.embeddings:
        if len(e.values) != facts.embedding:
            return f"embedding of {len(e.values)} values, expected {facts.embedding}", ""
    return "", digest(*[(e.num_tokens, tuple(e.values)) for e in resp.embeddings])


def check_response(spec, resp, facts):
    if spec.method == "ModelInfer":
        return check_infer_response(spec, resp, facts)
    return check_v1_response(spec, resp, facts)


# ------------------------------------------------------------------------------------ malformed
def _ids_request(pb, model, shape, raw=None, datatype="INT32", ids=None):
    req = pb.ModelInferRequest(model_name=model, id="bad")
    req.inputs.add(name="input_ids", datatype=datatype, shape=list(shape))
    if raw is not None:
        req.raw_input_contents.append(raw)
    elif ids is not None:
        req.raw_input_contents.append(np.asarray(ids, dtype="<i4").tobytes())
    return req


class Bad:
    """Builders of malformed requests for one model (each call returns a fresh message)."""

    BIG = 1 << 27

    def __init__(self, gen):
        self.pb, self.v1, self.m = gen.s.pb, gen.s.v1, gen.m

    def ids(self, shape, ids=None, raw=None, datatype="INT32"):
        return _ids_request(self.pb, self.m.name, shape, raw=raw, datatype=datatype, ids=ids)

    def with_mask(self, shape, mask):
        req = self.ids([1, 8], ids=[1] * 8)
        req.inputs.add(name="attention_mask", datatype="INT32", shape=shape)
        req.raw_input_contents.append(np.asarray(mask, dtype="<i4").tobytes())
        return req

    def timeout(self, field, value):
        req = self.ids([1, 4], ids=[1, 2, 3, 4])
        setattr(req.parameters["timeout"], field, value)
        return req

    def typed_bomb(self):
        req = self.pb.ModelInferRequest(model_name=self.m.name, id="bad")
        req.inputs.add(name="input_ids", datatype="INT32", shape=[1, self.BIG]).contents.int_contents.extend([1, 2])
        return req

    def outputs(self, *names):
        req = self.ids([1, 4], ids=[1, 2, 3, 4])
        for n in names:
            req.outputs.add(name=n)
        return req

    def text(self, shape, raw):
        req = self.pb.ModelInferRequest(model_name=self.m.name, id="bad")
        req.inputs.add(name="text", datatype="BYTES", shape=shape)
        req.raw_input_contents.append(raw)
        return req

    def mixed(self):
        req = self.ids([1, 4], ids=[1, 2, 3, 4])
        req.inputs.add(name="attention_mask", datatype="INT32", shape=[1, 4]).contents.int_contents.extend([1] * 4)
        req.raw_input_contents.append(b"")
        return req

    def v1_docs(self, method, docs):
        req = (self.v1.ScoreRequest if method == "Score" else self.v1.EmbedRequest)()
        for d in docs:
            doc = req.documents.add()
            if d is not None:
                doc.ids.ids.extend(d)
        return req


def malformed_cases(gen):
    """[(name, builder)]: each builder returns a Spec whose `expected` is the one right code."""
    b, m = Bad(gen), gen.m
    inv, nf, big, ctx_1 = frozenset({"InvalidArgument"}), frozenset({"NotFound"}), Bad.BIG, m.context + 1
    over = m.max_request_tokens // m.context + 1
    table = [  # (name, method, build, code)
        ("shape_vs_bytes", "ModelInfer", lambda: b.ids([2, 8], ids=[1] * 10), inv),
        ("rank3", "ModelInfer", lambda: b.ids([1, 1, 8], ids=[1] * 8), inv),
        ("negative_dim", "ModelInfer", lambda: b.ids([1, -8], raw=b""), inv),
        ("zero_rows", "ModelInfer", lambda: b.ids([0, 8], raw=b""), inv),
        ("id_vocab", "ModelInfer", lambda: b.ids([1, 3], ids=[1, m.vocab, 2]), inv),
        ("id_negative", "ModelInfer", lambda: b.ids([1, 3], ids=[1, -1, 2]), inv),
        ("bomb_raw_2e27", "ModelInfer", lambda: b.ids([1, big], raw=b"\1" * 8, datatype="INT64"), inv),
        ("bomb_typed_2e27", "ModelInfer", b.typed_bomb, inv),
        ("bomb_bytes_2e27", "ModelInfer", lambda: b.text([big], struct.pack("<I", 1) + b"a"), inv),
        ("bomb_raw_2e40", "ModelInfer", lambda: b.ids([1 << 20, 1 << 20], raw=b"\1" * 8, datatype="INT64"), inv),
        ("bomb_overflow", "ModelInfer", lambda: b.ids([1 << 62, 4], raw=b"\1" * 8), inv),
        ("datatype_fp32", "ModelInfer", lambda: b.ids([1, 2], raw=b"\0" * 8, datatype="FP32"), inv),
        ("datatype_bytes", "ModelInfer", lambda: b.ids([1, 2], raw=b"\0" * 8, datatype="BYTES"), inv),
        ("unknown_model", "ModelInfer", lambda: _named(b.ids([1, 2], ids=[1, 2]), "no-such-model"), nf),
        ("unknown_version", "ModelInfer", lambda: _version(b.ids([1, 2], ids=[1, 2])), nf),
        ("mixed_raw_typed", "ModelInfer", b.mixed, inv),
        ("unknown_output", "ModelInfer", lambda: b.outputs("probabilities"), inv),
        ("output_twice", "ModelInfer", lambda: b.outputs("logits", "logits"), inv),
        ("token_ids_without_text", "ModelInfer", lambda: b.outputs("token_ids"), inv),
        ("mask_hole", "ModelInfer", lambda: b.with_mask([1, 8], [1, 1, 0, 1, 1, 1, 1, 1]), inv),
        ("mask_value_2", "ModelInfer", lambda: b.with_mask([1, 8], [1, 2, 1, 1, 1, 1, 1, 1]), inv),
        ("mask_shape", "ModelInfer", lambda: b.with_mask([1, 7], [1] * 7), inv),
        ("doc_over_context", "ModelInfer", lambda: b.ids([1, ctx_1], ids=[1] * ctx_1), inv),
        ("request_over_limit", "ModelInfer", lambda: b.ids([over, m.context], ids=[1] * (over * m.context)), inv),
        ("timeout_negative", "ModelInfer", lambda: b.timeout("int64_param", -5), inv),
        ("timeout_string", "ModelInfer", lambda: b.timeout("string_param", "soon"), inv),
        ("no_inputs", "ModelInfer", lambda: b.pb.ModelInferRequest(model_name=m.name, id="bad"), inv),
        ("unknown_input", "ModelInfer", lambda: _rename(b.ids([1, 2], ids=[1, 2]), "tokens"), inv),
        ("raw_count", "ModelInfer", lambda: _drop_last_raw(b.with_mask([1, 8], [1] * 8)), inv),
        ("text_empty_row", "ModelInfer", lambda: b.text([1], struct.pack("<I", 0)), inv),
        ("text_truncated", "ModelInfer", lambda: b.text([2], struct.pack("<I", 100) + b"abc"), inv),
        ("score_empty_doc", "Score", lambda: b.v1_docs("Score", [[1, 2], []]), inv),
        ("score_id_vocab", "Score", lambda: b.v1_docs("Score", [[1, m.vocab]]), inv),
        ("embed_no_content", "Embed", lambda: b.v1_docs("Embed", [None]), inv),
        ("embed_no_documents", "Embed", lambda: b.v1_docs("Embed", []), inv),
        ("embed_over_context", "Embed", lambda: b.v1_docs("Embed", [[1] * ctx_1]), inv),
        ("score_over_limit", "Score", lambda: b.v1_docs("Score", [[1] * m.context] * over), inv),
    ]
    if not m.tokenizer:
        table = [t for t in table if "text" not in t[0]]
    if not m.causal:  # Score refuses a non-causal model before it looks at the documents
        fp = frozenset({"FailedPrecondition"})
        table = [(n, meth, bld, fp if meth == "Score" else code) for n, meth, bld, code in table]
    cases = [("bad_" + name, _spec_builder("bad_" + name, method, build, code))
             for name, method, build, code in table]
    return cases + raw_cases(m)


def _spec_builder(kind, method, build, code):
    return lambda: Spec(kind, method, build(), code)


def _named(req, model):
    req.model_name = model
    return req


def _version(req):
    req.model_version = "999"
    return req


def _rename(req, name):
    req.inputs[0].name = name
    return req


def _drop_last_raw(req):
    del req.raw_input_contents[-1]
    return req


def raw_cases(m):
    """Calls the gRPC library refuses before any handler runs: never in the server's metrics."""
    limit = 16 * m.max_request_tokens + (1 << 20)  # the server's receive limit (README)
    path = f"/{KSERVE}/ModelInfer"
    return [
        ("raw_unknown_method", lambda: Spec("raw_unknown_method", "NoSuchMethod", b"",
                                            frozenset({"Unimplemented"}), uncounted=frozenset({"Unimplemented"}),
                                            raw_method=f"/{KSERVE}/NoSuchMethod")),
        # gRPC's callback API answers UNIMPLEMENTED with no message when the request does not parse.
        ("raw_garbage_protobuf", lambda: Spec("raw_garbage_protobuf", "ModelInfer", b"\xff\xff\xff\xff",
                                              frozenset({"Unimplemented", "InvalidArgument"}),
                                              uncounted=frozenset({"Unimplemented"}), raw_method=path)),
        ("raw_over_receive_limit", lambda: Spec("raw_over_receive_limit", "ModelInfer",
                                                b"\x3a" + _varint(limit + 16) + b"\0" * (limit + 16),
                                                frozenset({"ResourceExhausted"}),
                                                uncounted=frozenset({"ResourceExhausted"}), raw_method=path)),
    ]


def _varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
