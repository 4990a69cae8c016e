#!/usr/bin/python3
"""Writes the seed corpora of fuzz/corpus/ (small, valid-looking inputs the fuzzers mutate).

Re-run after a format change: /usr/bin/python3 fuzz/make_seeds.py
Needs python3-protobuf and protoc (the build dependencies) for the gRPC request seeds, and
spm_train (Debian package `sentencepiece`) for the SentencePiece model seeds (those are kept in
git, so only a format change needs it). Files it does not write are left alone.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, pad=True):
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    while pad and (8 + len(h)) % 8:
        h += b" "
    return struct.pack("<Q", len(h)) + h + blob


def safetensors_seeds():
    os.makedirs(os.path.join(HERE, "corpus", "safetensors"), exist_ok=True)
    f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, -7)
    write("safetensors", "f32_2x3", safetensors([("w", "F32", [2, 3], f32)], {"format": "pt"}))
    write("safetensors", "mixed_dtypes", safetensors([
        ("a", "F16", [3], struct.pack("<3H", 0x3C00, 0x8001, 0x7C00)),
        ("b", "BF16", [2], struct.pack("<2H", 0x3F80, 0xFF80)),
        ("c", "F64", [2], struct.pack("<2d", 1.5, -0.25)),
        ("d", "I32", [1, 2], struct.pack("<2i", 7, -9)),
        ("e", "U8", [4], b"\x00\x01\x02\xff"),
        ("f", "BOOL", [1], b"\x01"),
        ("g", "I64", [1], struct.pack("<q", -1)),
    ]))
    write("safetensors", "empty_and_scalar", safetensors([
        ("empty", "F32", [0, 5], b""), ("scalar", "F32", [], struct.pack("<f", 2.0))]))
    write("safetensors", "unaligned_f32", safetensors([("u8", "U8", [1], b"\x05"),
                                                       ("x", "F32", [2], struct.pack("<2f", 1, 2))], pad=False))
    write("safetensors", "header_only", safetensors([], {"k": "v"}))
    write("safetensors", "truncated", safetensors([("w", "F32", [2, 3], f32)])[:-4])
    rot = os.path.join(ROOT, "tests/fixtures/f5_short_seq_standard_attention/rotations.safetensors")
    if os.path.exists(rot) and os.path.getsize(rot) < 8192:
        shutil.copy(rot, os.path.join(HERE, "corpus", "safetensors", "fixture_rotations"))


def config_seeds():
    os.makedirs(os.path.join(HERE, "corpus", "config"), exist_ok=True)
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    for d in sorted(os.listdir(fixtures)):
        p = os.path.join(fixtures, d, "config.json")
        if os.path.exists(p):
            shutil.copy(p, os.path.join(HERE, "corpus", "config", d))
    shutil.copy(os.path.join(ROOT, "models/default/config.json"), os.path.join(HERE, "corpus", "config", "default_model"))
    write("config", "factorized_buckets", json.dumps({
        "attn_layers": ["lsh", "lsh"], "num_buckets": [4, 8], "hash_seed": 3, "axial_pos_embds": False,
        "max_position_embeddings": 512, "hidden_size": 16, "attention_head_size": 8, "num_attention_heads": 2}))
    write("config", "auto_buckets", json.dumps({
        "attn_layers": ["lsh"], "num_buckets": None, "num_hidden_layers": 3, "is_decoder": True,
        "hidden_act": "gelu_new", "layer_norm_eps": 1e-5, "chunk_size_feed_forward": 16}))
    write("config", "minimal", "{}")


def tokenizer_bytes_seeds():
    write("tokenizer_bytes", "class_bytes", b'{"tokenizer_class": "ReformerByteTokenizer"}\x00Hello \xc3\xa9\x00\xff')
    write("tokenizer_bytes", "type_byte", b'{"type": "byte", "model_max_length": 4096}\x00text')
    write("tokenizer_bytes", "not_bytes", b'{"tokenizer_class": "ReformerTokenizer"}\x00abc')
    write("tokenizer_bytes", "not_json", b'{"tokenizer_type": \x00x')


def sentencepiece_seeds():
    """Tiny models trained on a license text (kept in git; regenerated only when spm_train exists)."""
    if shutil.which("spm_train") is None:
        print("make_seeds: spm_train not found (apt-get install sentencepiece); keeping the SentencePiece seeds")
        return
    text = "/usr/share/common-licenses/GPL-3"
    with tempfile.TemporaryDirectory() as tmp:
        # Identity normalisation keeps the models small (Debian's default NFKC table is 240 KB); one
        # model carries a small custom normalisation table, so the charsmap parser is fuzzed too.
        rules = os.path.join(tmp, "rules.tsv")
        with open(rules, "w") as f:
            f.write("41\t61\n42\t62\n3000\t20\nFF21\t41\n")
        ident = "--normalization_rule_name=identity"
        for name, args in [("unigram_100", ["--model_type=unigram", "--vocab_size=100", ident]),
                           ("bpe_100", ["--model_type=bpe", "--vocab_size=100", ident]),
                           ("char_bytefallback", ["--model_type=char", "--byte_fallback=true",
                                                  "--vocab_size=320", ident]),
                           ("word_custom_rules", ["--model_type=word", "--vocab_size=100",
                                                  "--normalization_rule_tsv=" + rules])]:
            prefix = os.path.join(tmp, name)
            subprocess.run(["spm_train", "--input=" + text, "--model_prefix=" + prefix, "--minloglevel=2",
                            "--input_sentence_size=2000", "--character_coverage=0.98"] + args,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(prefix + ".model", "rb") as f:
                write("sentencepiece", name, f.read())


def proto_modules():
    tmp = tempfile.mkdtemp()
    subprocess.run(["protoc", "--proto_path=" + os.path.join(ROOT, "proto"), "--python_out=" + tmp,
                    "grpc_service.proto", "reformer.proto"], check=True)
    sys.path.insert(0, tmp)
    import grpc_service_pb2  # noqa: E402
    import reformer_pb2  # noqa: E402
    return grpc_service_pb2, reformer_pb2


def kserve_seeds(pb):
    def request(**kw):
        r = pb.ModelInferRequest(model_name="default", **kw)
        return r

    r = request(id="ids-raw")
    t = r.inputs.add(name="input_ids", datatype="INT64", shape=[2, 4])
    m = r.inputs.add(name="attention_mask", datatype="INT64", shape=[2, 4])
    r.raw_input_contents.append(struct.pack("<8q", 5, 6, 7, 8, 0, 0, 9, 10))
    r.raw_input_contents.append(struct.pack("<8q", 1, 1, 1, 1, 0, 0, 1, 1))
    r.outputs.add(name="token_logprobs")
    r.outputs.add(name="embedding")
    r.parameters["priority"].int64_param = 2
    write("kserve_infer", "ids_raw_int64_mask", r.SerializeToString())

    r = request(model_version="1")
    t = r.inputs.add(name="input_ids", datatype="INT32", shape=[1, 3])
    t.contents.int_contents.extend([3, 4, 5])
    m = r.inputs.add(name="attention_mask", datatype="BOOL", shape=[1, 3])
    m.contents.bool_contents.extend([True, True, False])
    r.parameters["timeout"].uint64_param = 5000000
    write("kserve_infer", "ids_typed_int32_bool_mask", r.SerializeToString())

    r = request()
    t = r.inputs.add(name="text", datatype="BYTES", shape=[2])
    r.raw_input_contents.append(struct.pack("<I", 5) + b"hello" + struct.pack("<I", 3) + b"abc")
    write("kserve_infer", "text_raw", r.SerializeToString())

    r = request()
    t = r.inputs.add(name="text", datatype="BYTES", shape=[1, 1])
    t.contents.bytes_contents.append(b"typed text")
    for name in ["logits", "hidden_states", "token_ids", "lengths"]:
        r.outputs.add(name=name)
    write("kserve_infer", "text_typed_all_outputs", r.SerializeToString())

    r = pb.ModelInferRequest(model_name="other")
    write("kserve_infer", "unknown_model", r.SerializeToString())


def reformer_v1_seeds(v1):
    r = v1.ScoreRequest(return_token_logprobs=True, priority=1)
    r.documents.add(text="The quick brown fox")
    r.documents.add().ids.ids.extend([2, 3, 4, 5])
    write("reformer_v1", "score_text_and_ids", b"\x00" + r.SerializeToString())
    r = v1.EmbedRequest(normalize=True)
    r.documents.add(text="embed me")
    write("reformer_v1", "embed_text", b"\x01" + r.SerializeToString())
    r = v1.TokenizeRequest(texts=["one", "", "caf\u00e9"])
    write("reformer_v1", "tokenize_texts", b"\x02" + r.SerializeToString())
    r = v1.ScoreRequest()
    r.documents.add()
    write("reformer_v1", "score_empty_document", b"\x00" + r.SerializeToString())


def token_file_seeds():
    write("token_file", "two_tenants", "# tokens\nalice:alice-token-0123456789\n\nbob : Bob.Token_ABCDEFGHIJ+/=!\r\n"
          "\0Bearer alice-token-0123456789")
    write("token_file", "rotation_same_name", "team-a:old-token-aaaaaaaaaaaa\nteam-a:new-token-bbbbbbbbbbbb\n"
          "\0bearer   new-token-bbbbbbbbbbbb  ")
    write("token_file", "short_token", "carol:short\n\0Bearer short")
    write("token_file", "duplicate_token", "a:same-token-0123456789\nb:same-token-0123456789\n")
    write("token_file", "bad_name", "-x:0123456789abcdef0123\nanonymous:0123456789abcdef0123\n")
    write("token_file", "comments_only", "# nothing\n\n   \n")


def tls_pem_seeds():
    """Certificates and keys made with the openssl CLI, valid 2026-2126 (the target checks at 2030)."""
    with tempfile.TemporaryDirectory() as t:
        def ossl(*args):
            subprocess.run(["openssl", *args], cwd=t, check=True, capture_output=True)

        def read(name):
            with open(os.path.join(t, name), "rb") as f:
                return f.read()

        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days",
             "36500", "-subj", "/CN=fuzz-ca", "-keyout", "ca.key", "-out", "ca.crt")
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
             "/CN=server/O=fuzz", "-keyout", "srv.key", "-out", "srv.csr")
        ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "36500", "-out", "srv.crt")
        ossl("req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "36500", "-subj", "/CN=rsa",
             "-keyout", "rsa.key", "-out", "rsa.crt")
        ca, srv, srv_key, rsa, rsa_key = (read(n) for n in ("ca.crt", "srv.crt", "srv.key", "rsa.crt", "rsa.key"))
    write("tls_pem", "ec_chain_mtls", srv + ca + b"\0" + srv_key + b"\0" + ca)
    write("tls_pem", "ec_leaf_tls", srv + b"\0" + srv_key)
    write("tls_pem", "rsa_self_signed", rsa + b"\0" + rsa_key)
    write("tls_pem", "key_mismatch", rsa + b"\0" + srv_key)
    write("tls_pem", "empty_ca", srv + b"\0" + srv_key + b"\0")


def generate_request_seeds(v1):
    r = v1.GenerateRequest(max_new_tokens=8, temperature=0.7, top_k=20, top_p=0.9, seed=42, stop=["\n\n", "END"])
    r.prompt.text = "Once upon a time"
    write("generate_request", "text_sampling_stops", r.SerializeToString())
    r = v1.GenerateRequest(max_new_tokens=4, return_logprobs=True, ignore_eos=True, priority=2)
    r.prompt.ids.ids.extend([5, 6, 7, 8])
    write("generate_request", "ids_greedy_logprobs", r.SerializeToString())
    r = v1.GenerateRequest(max_new_tokens=60)
    r.prompt.ids.ids.extend([1, 2, 3, 4, 5])
    write("generate_request", "ids_beyond_context", r.SerializeToString())
    r = v1.GenerateRequest(max_new_tokens=1, temperature=-1.0)
    r.prompt.text = "x"
    write("generate_request", "negative_temperature", r.SerializeToString())
    write("generate_request", "no_prompt", v1.GenerateRequest(max_new_tokens=3).SerializeToString())


def rest_infer_seeds():
    """Selector byte (bit 0: Inference-Header-Content-Length, its value up to '\\n'; bit 1: version "1";
    bit 2: another model's name), then the REST body (fuzz/rest_infer_fuzzer.cc)."""
    def js(obj):
        return json.dumps(obj, separators=(",", ":")).encode()

    def with_header(obj, binary):
        j = js(obj)
        return b"\x01" + str(len(j)).encode() + b"\n" + j + binary

    write("rest_infer", "ids_nested_mask_outputs", b"\x00" + js({
        "id": "r1", "parameters": {"priority": 1, "timeout": 5000000},
        "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [2, 3], "data": [[5, 6, 7], [8, 9, 0]]},
                   {"name": "attention_mask", "datatype": "BOOL", "shape": [2, 3],
                    "data": [True, True, True, True, True, False]}],
        "outputs": [{"name": "token_logprobs"}, {"name": "embedding", "parameters": {"binary_data": True}}]}))
    write("rest_infer", "text_all_outputs_v1", b"\x02" + js({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hello", "caf\u00e9"]}],
        "outputs": [{"name": n} for n in ["logits", "hidden_states", "token_ids", "lengths"]]}))
    write("rest_infer", "binary_ids_int32", with_header({
        "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [1, 4],
                    "parameters": {"binary_data_size": 16}}],
        "parameters": {"binary_data_output": True}}, struct.pack("<4i", 3, 4, 5, 6)))
    write("rest_infer", "binary_text_empty_row", with_header({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": 11}}]},
        struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0) + b""))
    write("rest_infer", "unknown_model", b"\x04" + js({"inputs": []}))
    write("rest_infer", "malformed", b"\x00{\"inputs\":[{\"name\":\"input_ids\",\"shape\":[1,")


def generate_json_seeds():
    """Selector byte (bit 0: a model without tokenizer) + an HTTP generate body (server/http/generate_json.h)."""
    for name, selector, body in [
        ("text_all_parameters", 0, '{"text_input": "And God said", "parameters": {"max_tokens": 8, '
         '"temperature": 0.7, "top_k": 5, "top_p": 0.9, "seed": 42, "stop": ["\\n", "LORD"], "mode": "recompute", '
         '"ignore_eos": true, "return_logprobs": true, "priority": 2, "timeout": 1000000, "stream": false}, "id": "r1"}'),
        ("ids_top_level_parameters", 1, '{"input_ids": [3, 70, 257, 0], "max_tokens": 4, "stop": "x"}'),
        ("text_without_tokenizer", 1, '{"text_input": "needs a tokenizer"}'),
        ("bad_types", 0, '{"input_ids": [1, 2.5, -3, 99999999999], "parameters": {"mode": "fast", "max_tokens": "8"}}'),
        ("out_of_range", 0, '{"text_input": "x", "parameters": {"max_tokens": 64, "top_p": 1.5, "temperature": 1e400}}'),
        ("twice_and_unknown", 0, '{"text_input": "x", "parameters": {"max_tokens": 3}, "max_tokens": 3, "foo": [{}]}'),
        ("malformed", 0, '{"text_input": "\\u00e9\\ud83d\\ude00", "parameters": {'),
    ]:
        write("generate_json", name, bytes([selector]) + body.encode())


def main():
    token_file_seeds()
    tls_pem_seeds()
    safetensors_seeds()
    config_seeds()
    tokenizer_bytes_seeds()
    sentencepiece_seeds()
    pb, v1 = proto_modules()
    kserve_seeds(pb)
    reformer_v1_seeds(v1)
    rest_infer_seeds()
    generate_request_seeds(v1)
    generate_json_seeds()
    for d in sorted(os.listdir(os.path.join(HERE, "corpus"))):
        files = os.listdir(os.path.join(HERE, "corpus", d))
        size = sum(os.path.getsize(os.path.join(HERE, "corpus", d, f)) for f in files)
        print(f"corpus/{d}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
