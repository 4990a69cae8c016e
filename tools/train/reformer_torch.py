"""A small PyTorch Reformer that computes what docs/engine-numerics.md describes.

Used to train the bundled default model and as an independent float32 reference for the C++ engine.
Parameter names are the Hugging Face ones (``model.state_dict()`` keys equal the checkpoint keys), so
``export_safetensors`` writes a file the engine (and HF transformers) can load.

Scope: eval/training forward of ``ReformerModelWithLMHead`` (causal) and ``ReformerForMaskedLM``
(bidirectional) with optional attention mask, internal padding to the chunk lcm, local and LSH
attention (shared QK, multi-round hashing, int or factorised ``num_buckets``, circular adjacent
chunks), axial or learned positions. LSH rotations are an explicit input (``rotations`` dict or a
fixed set drawn from ``hash_seed`` exactly as HF draws them). No incremental-decoding cache.
Training uses plain autograd through the reversible stack (no memory-saving backward).
"""

import json
import math
import struct

import torch
from torch import nn

MASK = -1e9  # padding key or causal violation (float32 fill)
SELF = -1e5  # LSH: the query's own position

CONFIG_DEFAULTS = {
    "attn_layers": ["local", "lsh", "local", "lsh", "local", "lsh"],
    "hidden_size": 256,
    "num_attention_heads": 12,
    "attention_head_size": 64,
    "feed_forward_size": 512,
    "vocab_size": 320,
    "hidden_act": "relu",
    "is_decoder": False,
    "layer_norm_eps": 1e-12,
    "axial_pos_embds": True,
    "axial_pos_shape": [64, 64],
    "axial_pos_embds_dim": [64, 192],
    "max_position_embeddings": 4096,
    "lsh_attn_chunk_length": 64,
    "local_attn_chunk_length": 64,
    "lsh_num_chunks_before": 1,
    "lsh_num_chunks_after": 0,
    "local_num_chunks_before": 1,
    "local_num_chunks_after": 0,
    "num_hashes": 1,
    "num_buckets": None,
    "hash_seed": None,
    "chunk_size_feed_forward": 0,
    "chunk_size_lm_head": 0,
    "pad_token_id": 0,
}


def full_config(cfg):
    out = dict(CONFIG_DEFAULTS)
    out.update(cfg)
    if "num_hidden_layers" in cfg and cfg["num_hidden_layers"] is not None:
        n = cfg["num_hidden_layers"]
        types = out["attn_layers"]
        if len(set(types)) == 1:
            out["attn_layers"] = [types[0]] * n
        else:
            out["attn_layers"] = list(types[:n])
    return out


# ----------------------------------------------------------------------------------------------
# safetensors (written and read by hand: header length u64 LE, JSON header, raw LE data)

_ST_DTYPES = {
    torch.float32: ("F32", 4),
    torch.float64: ("F64", 8),
    torch.int32: ("I32", 4),
    torch.int64: ("I64", 8),
    torch.uint8: ("U8", 1),
    torch.float16: ("F16", 2),
}
_ST_FROM = {v[0]: k for k, v in _ST_DTYPES.items()}


def save_safetensors(path, tensors, metadata=None):
    """Writes a dict name -> tensor (contiguous, little-endian) as a safetensors file."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        code, _ = _ST_DTYPES[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    np_types = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8,
                "F16": np.float16}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=np_types[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ----------------------------------------------------------------------------------------------
# helpers


def _act(name):
    if name == "relu":
        return torch.relu
    if name == "gelu":
        return lambda x: torch.nn.functional.gelu(x)
    if name == "gelu_new":
        return lambda x: torch.nn.functional.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return torch.nn.functional.silu
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    raise ValueError("unsupported hidden_act %r" % name)


def _lse_softmax(scores):
    """Section 6: lse = logsumexp (max-subtracted), p = exp(s - lse)."""
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return torch.exp(scores - lse), lse.squeeze(-1)


def _adjacent(x, before, after, dim):
    """Concatenates chunks j-before..j+after (circular) along dim+1 (the in-chunk axis)."""
    if before == 0 and after == 0:
        return x
    parts = []
    for i in range(-before, after + 1):
        parts.append(x if i == 0 else torch.roll(x, shifts=-i, dims=dim))
    return torch.cat(parts, dim=dim + 1)


def rotation_size(num_buckets):
    if isinstance(num_buckets, (list, tuple)):
        return sum(num_buckets)
    return num_buckets


def resolve_num_buckets(cfg, padded_len):
    """HF's rule for num_buckets: null (engine-numerics §1.3)."""
    c = cfg["lsh_attn_chunk_length"]
    p = (2 * (padded_len // c)).bit_length() - 1
    nb = 2 ** p
    limit = 2 * max(int(math.sqrt(cfg["max_position_embeddings"] // c)), c)
    if nb > limit:
        return [2 ** (p // 2), 2 ** (p - p // 2)]
    return nb


def draw_rotations(cfg, num_buckets=None):
    """Rotations exactly as HF draws them with hash_seed set: manual_seed(hash_seed), then randn(shape)
    right before each LSH layer's draw, so every LSH layer gets the same tensor."""
    nb = cfg["num_buckets"] if num_buckets is None else num_buckets
    if cfg.get("hash_seed") is None or nb is None:
        raise ValueError("draw_rotations needs hash_seed and num_buckets")
    shape = (cfg["num_attention_heads"], cfg["attention_head_size"], cfg["num_hashes"], rotation_size(nb) // 2)
    rots = {}
    state = torch.random.get_rng_state()
    try:
        for i, kind in enumerate(cfg["attn_layers"]):
            if kind == "lsh":
                torch.manual_seed(cfg["hash_seed"])
                rots["encoder.layers.%d.lsh_rotations" % i] = torch.randn(shape, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(state)
    return rots


# ----------------------------------------------------------------------------------------------
# modules (attribute paths reproduce the HF parameter names)


class AxialPositionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        a0, a1 = cfg["axial_pos_shape"]
        d0, d1 = cfg["axial_pos_embds_dim"]
        self.shape = (a0, a1)
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(a0, 1, d0)), nn.Parameter(torch.zeros(1, a1, d1))])

    def forward(self, t):
        a0, a1 = self.shape
        if t > a0 * a1:
            raise ValueError("sequence length %d exceeds axial_pos_shape product %d" % (t, a0 * a1))
        w0 = self.weights[0][:, 0, :]  # [a0, d0]
        w1 = self.weights[1][0]  # [a1, d1]
        pos = torch.arange(t)
        return torch.cat([w0[pos // a1], w1[pos % a1]], dim=-1)


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])

    def forward(self, t):
        return self.embedding.weight[:t]


class Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        if cfg["axial_pos_embds"]:
            self.position_embeddings = AxialPositionEmbeddings(cfg)
        else:
            self.position_embeddings = LearnedPositionEmbeddings(cfg)

    def forward(self, ids):
        return self.word_embeddings(ids) + self.position_embeddings(ids.shape[1]).unsqueeze(0)


def _split_heads(x, nh, dh):
    b, t, _ = x.shape
    return x.view(b, t, nh, dh).transpose(1, 2)  # [B, nh, T, dh]


def _merge_heads(x):
    b, nh, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, nh * dh)


class LSHSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.nh = cfg["num_attention_heads"]
        self.dh = cfg["attention_head_size"]
        h = cfg["hidden_size"]
        self.query_key = nn.Linear(h, self.nh * self.dh, bias=False)
        self.value = nn.Linear(h, self.nh * self.dh, bias=False)
        self.chunk = cfg["lsh_attn_chunk_length"]
        self.before = cfg["lsh_num_chunks_before"]
        self.after = cfg["lsh_num_chunks_after"]
        self.num_hashes = cfg["num_hashes"]
        self.causal = cfg["is_decoder"]

    def _knorm(self, u):
        return u / torch.sqrt(torch.mean(u * u, dim=-1, keepdim=True) + 1e-6) / math.sqrt(self.dh)

    def _buckets(self, qk, rot, num_buckets, mask):
        # qk [B, nh, T, dh], rot [nh, dh, nH, rs/2] -> buckets [B, nh, nH, T] (before round offsets)
        r = torch.einsum("bhtd,hdnr->bhntr", qk, rot)
        if isinstance(num_buckets, (list, tuple)) and len(num_buckets) > 1:
            buckets = torch.zeros(r.shape[:-1], dtype=torch.long)
            off, prod = 0, 1
            for f in num_buckets:
                rk = r[..., off:off + f // 2]
                buckets = buckets + prod * torch.argmax(torch.cat([rk, -rk], dim=-1), dim=-1)
                off += f // 2
                prod *= f
            nb = prod
        else:
            nb = num_buckets[0] if isinstance(num_buckets, (list, tuple)) else num_buckets
            buckets = torch.argmax(torch.cat([r, -r], dim=-1), dim=-1)
        if mask is not None and bool((mask == 0).any()):
            pad = (mask == 0)[:, None, None, :].expand_as(buckets)
            buckets = torch.where(pad, torch.full_like(buckets, nb), buckets)
            nbk = nb + 1
        else:
            nbk = nb
        return buckets, nbk

    def forward(self, y, mask, rot, num_buckets, debug=None):
        b, t, _ = y.shape
        qk = _split_heads(self.query_key(y), self.nh, self.dh)
        v = _split_heads(self.value(y), self.nh, self.dh)
        if t <= self.chunk:  # engine-numerics §7.2: plain attention, no hashing
            s = torch.matmul(qk, self._knorm(qk).transpose(-1, -2))  # [B, nh, T, T]
            idx = torch.arange(t)
            if mask is not None:
                s = s.masked_fill((mask == 0)[:, None, None, :], MASK)
            if self.causal:
                s = s.masked_fill(idx[None, :] > idx[:, None], MASK)
            s = s.masked_fill(idx[None, :] == idx[:, None], SELF)
            p, _ = _lse_softmax(s)
            return _merge_heads(torch.matmul(p, v))

        nH = self.num_hashes
        buckets, nbk = self._buckets(qk, rot, num_buckets, mask)
        keys = buckets + (torch.arange(nH) * nbk)[None, None, :, None]  # [B, nh, nH, T]
        n = nH * t
        keys = keys.reshape(b, self.nh, n)
        if debug is not None:
            debug["buckets"] = keys.to(torch.int32)
        # stable sort by key: sort the unique composite key*N + flat index
        composite = keys * n + torch.arange(n)
        perm = torch.argsort(composite, dim=-1)  # [B, nh, N]
        pos = perm % t
        gidx = pos.unsqueeze(-1).expand(b, self.nh, n, self.dh)
        q_s = torch.gather(qk, 2, gidx)
        v_s = torch.gather(v, 2, gidx)
        k_s = self._knorm(q_s)
        c = self.chunk
        nc = n // c
        q_c = q_s.view(b, self.nh, nc, c, self.dh)
        k_c = _adjacent(k_s.view(b, self.nh, nc, c, self.dh), self.before, self.after, 2)
        v_c = _adjacent(v_s.view(b, self.nh, nc, c, self.dh), self.before, self.after, 2)
        pq = pos.view(b, self.nh, nc, c)
        pk = _adjacent(pq, self.before, self.after, 2)
        s = torch.matmul(q_c, k_c.transpose(-1, -2))  # [B, nh, nc, c, w]
        if mask is not None:
            mk = torch.gather(mask.to(torch.long)[:, None, :].expand(b, self.nh, t), 2, pk.reshape(b, self.nh, -1))
            mk = mk.view(pk.shape)
            s = s.masked_fill((mk == 0)[..., None, :], MASK)
        if self.causal:
            s = s.masked_fill(pk[..., None, :] > pq[..., :, None], MASK)
        s = s.masked_fill(pk[..., None, :] == pq[..., :, None], SELF)
        p, lse = _lse_softmax(s)
        o = torch.matmul(p, v_c).reshape(b, self.nh, n, self.dh)
        lse = lse.reshape(b, self.nh, n)
        inv = torch.empty_like(perm).scatter_(-1, perm, torch.arange(n).expand_as(perm).contiguous())
        o = torch.gather(o, 2, inv.unsqueeze(-1).expand(b, self.nh, n, self.dh))
        lse = torch.gather(lse, 2, inv)
        if nH == 1:
            out = o
        else:
            o = o.view(b, self.nh, nH, t, self.dh)
            lse = lse.view(b, self.nh, nH, t)
            w = torch.exp(lse - torch.logsumexp(lse, dim=2, keepdim=True))
            out = (w.unsqueeze(-1) * o).sum(dim=2)
        return _merge_heads(out)


class LocalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.nh = cfg["num_attention_heads"]
        self.dh = cfg["attention_head_size"]
        h = cfg["hidden_size"]
        self.query = nn.Linear(h, self.nh * self.dh, bias=False)
        self.key = nn.Linear(h, self.nh * self.dh, bias=False)
        self.value = nn.Linear(h, self.nh * self.dh, bias=False)
        self.chunk = cfg["local_attn_chunk_length"]
        self.before = cfg["local_num_chunks_before"]
        self.after = cfg["local_num_chunks_after"]
        self.causal = cfg["is_decoder"]
        self.scale = torch.tensor(math.sqrt(self.dh), dtype=torch.float32)

    def forward(self, y, mask, rot=None, num_buckets=None, debug=None):
        b, t, _ = y.shape
        q = _split_heads(self.query(y), self.nh, self.dh)
        k = _split_heads(self.key(y), self.nh, self.dh) / self.scale
        v = _split_heads(self.value(y), self.nh, self.dh)
        idx = torch.arange(t)
        if t <= self.chunk:
            s = torch.matmul(q, k.transpose(-1, -2))
            if mask is not None:
                s = s.masked_fill((mask == 0)[:, None, None, :], MASK)
            if self.causal:
                s = s.masked_fill(idx[None, :] > idx[:, None], MASK)
            p, _ = _lse_softmax(s)
            return _merge_heads(torch.matmul(p, v))
        c = self.chunk
        nc = t // c
        q_c = q.reshape(b, self.nh, nc, c, self.dh)
        k_c = _adjacent(k.reshape(b, self.nh, nc, c, self.dh), self.before, self.after, 2)
        v_c = _adjacent(v.reshape(b, self.nh, nc, c, self.dh), self.before, self.after, 2)
        pq = idx.view(nc, c)
        pk = _adjacent(pq, self.before, self.after, 0)  # [nc, w]
        s = torch.matmul(q_c, k_c.transpose(-1, -2))  # [B, nh, nc, c, w]
        if mask is not None:
            mk = mask.to(torch.long)[:, pk]  # [B, nc, w]
            s = s.masked_fill((mk == 0)[:, None, :, None, :], MASK)
        if self.causal:
            s = s.masked_fill(pk[:, None, :] > pq[:, :, None], MASK)
        p, _ = _lse_softmax(s)
        o = torch.matmul(p, v_c).reshape(b, self.nh, t, self.dh)
        return _merge_heads(o)


class _Dense(nn.Module):
    def __init__(self, i, o, bias):
        super().__init__()
        self.dense = nn.Linear(i, o, bias=bias)

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self, cfg, kind):
        super().__init__()
        h = cfg["hidden_size"]
        self.layer_norm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.self_attention = LSHSelfAttention(cfg) if kind == "lsh" else LocalSelfAttention(cfg)
        self.output = _Dense(cfg["num_attention_heads"] * cfg["attention_head_size"], h, bias=False)

    def forward(self, z, mask, rot, num_buckets, debug=None):
        return self.output(self.self_attention(self.layer_norm(z), mask, rot, num_buckets, debug))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, f = cfg["hidden_size"], cfg["feed_forward_size"]
        self.layer_norm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.dense = _Dense(h, f, bias=True)
        self.output = _Dense(f, h, bias=True)
        self.act = _act(cfg["hidden_act"])

    def forward(self, a):
        return self.output(self.act(self.dense(self.layer_norm(a))))


class Layer(nn.Module):
    def __init__(self, cfg, kind):
        super().__init__()
        self.kind = kind
        self.attention = Attention(cfg, kind)
        self.feed_forward = FeedForward(cfg)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([Layer(cfg, k) for k in cfg["attn_layers"]])
        self.layer_norm = nn.LayerNorm(2 * cfg["hidden_size"], eps=cfg["layer_norm_eps"])


class ReformerBody(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)


class LMHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.decoder = nn.Linear(2 * cfg["hidden_size"], cfg["vocab_size"], bias=True)


class ReformerLM(nn.Module):
    """ReformerModelWithLMHead (is_decoder true) or ReformerForMaskedLM (false): same parameters."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = full_config(cfg)
        self.reformer = ReformerBody(self.cfg)
        self.lm_head = LMHead(self.cfg)
        self.rotations = {}  # "encoder.layers.{i}.lsh_rotations" -> tensor
        self.num_buckets = self.cfg["num_buckets"]

    def set_rotations(self, rots):
        self.rotations = {k: v.to(torch.float32) for k, v in rots.items()}

    def _chunk_lengths(self):
        kinds = set(self.cfg["attn_layers"])
        ls = []
        if "lsh" in kinds:
            ls.append(self.cfg["lsh_attn_chunk_length"])
        if "local" in kinds:
            ls.append(self.cfg["local_attn_chunk_length"])
        return ls

    def forward(self, ids, attention_mask=None, debug=None, return_hidden=False):
        """ids [B, T0] long -> logits [B, T0, V] float32 (engine-numerics §4-§9)."""
        b, t0 = ids.shape
        ls = self._chunk_lengths()
        lcm = ls[0]
        for x in ls[1:]:
            lcm = lcm * x // math.gcd(lcm, x)
        mask = attention_mask
        t = t0
        if t0 > min(ls) and t0 % lcm != 0:
            extra = lcm - t0 % lcm
            t = t0 + extra
            ids = torch.cat([ids, torch.full((b, extra), self.cfg["pad_token_id"], dtype=ids.dtype)], dim=1)
            if mask is None:
                mask = torch.ones(b, t0, dtype=torch.long)
            mask = torch.cat([mask.to(torch.long), torch.zeros(b, extra, dtype=torch.long)], dim=1)
        if t > self.cfg["max_position_embeddings"]:
            raise ValueError("sequence length %d > max_position_embeddings" % t)
        if mask is not None:
            mask = mask.to(torch.long)
        x = self.reformer.embeddings(ids)
        a, z = x, x
        nb = self.num_buckets
        for i, layer in enumerate(self.reformer.encoder.layers):
            rot = None
            if layer.kind == "lsh" and t > self.cfg["lsh_attn_chunk_length"]:
                if nb is None:
                    nb = resolve_num_buckets(self.cfg, t)
                    self.num_buckets = nb
                rot = self.rotations["encoder.layers.%d.lsh_rotations" % i]
            d = {} if debug is not None else None
            a = a + layer.attention(z, mask, rot, nb, d)
            z = z + layer.feed_forward(a)
            if debug is not None and "buckets" in d:
                debug["encoder.layers.%d.buckets" % i] = d["buckets"]
        h = self.reformer.encoder.layer_norm(torch.cat([a, z], dim=-1))[:, :t0]
        logits = self.lm_head.decoder(h)
        if return_hidden:
            return logits, h
        return logits


# ----------------------------------------------------------------------------------------------
# checkpoint I/O

_IGNORED_SUFFIXES = ("self_mask_value_float16", "self_mask_value_float32", "mask_value_float16",
                     "mask_value_float32")


def load_state(model, tensors):
    """Loads HF-named tensors into the model (accepts lm_head.bias and/or lm_head.decoder.bias)."""
    sd = {}
    for k, v in tensors.items():
        if k.endswith(_IGNORED_SUFFIXES):
            continue
        if k == "lm_head.bias":
            sd.setdefault("lm_head.decoder.bias", v)
            continue
        sd[k] = v
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError("checkpoint mismatch: missing %s unexpected %s" % (missing, unexpected))


def export_tensors(model):
    """state_dict as HF names; the LM bias is written under both names HF files use."""
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    out["lm_head.bias"] = out["lm_head.decoder.bias"].clone()
    return out


def hf_config(cfg):
    """A complete HF ReformerConfig-style dict for config.json."""
    out = full_config(cfg)
    out.setdefault("architectures", ["ReformerModelWithLMHead" if out["is_decoder"] else "ReformerForMaskedLM"])
    out["model_type"] = "reformer"
    out.setdefault("tie_word_embeddings", False)
    for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "lsh_attention_probs_dropout_prob",
              "local_attention_probs_dropout_prob"):
        out.setdefault(k, 0.0)
    out.setdefault("initializer_range", 0.02)
    out.setdefault("axial_norm_std", 1.0)
    out.setdefault("eos_token_id", 2)
    out.setdefault("use_cache", True)
    return out
