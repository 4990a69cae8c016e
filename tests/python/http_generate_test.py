#!/usr/bin/python3
"""HTTP generation (Triton's generate extension: POST /v2/models/{name}/generate and generate_stream)
against a real reformer-server on the bundled default model (byte-level tokenizer, id = byte + 2, EOS 2):
  1. /generate gives the same tokens and text as gRPC Generate and as offline `reformer-cli generate --json`
     for the same request (greedy, sampled with a seed, recompute mode, input_ids);
  2. generate_stream: text/event-stream whose events concatenate to the /generate answer (also for
     sampled bytes that split UTF-8 characters), only the last one with finish_reason;
  3. finish reasons: length, eos (a seeded hot sampling run ends on id 2; ignore_eos goes past it with the
     same tokens), stop (a string from the middle of the text: the text before it);
  4. bad requests: 400 with the precise message, 404 for another model, 405 for GET;
  5. a client that disconnects mid-stream (and one that leaves a /generate) frees its sequence and cache:
     reformer_generate_active_sequences and reformer_generate_cache_bytes return to 0;
  6. with --auth_tokens_file: 401 without or with a wrong token, 200 with it; reformer-cli client commands
     send the token from --token_file or $REFORMER_TOKEN (and fail without it);
  7. a prompt whose cache can never fit the memory budget: 413 with the numbers (as REST inference maps
     RESOURCE_EXHAUSTED at admission);
  8. SIGTERM with a stream running: new requests 503, the stream ends with an error event after the drain
     timeout, the server exits 0.
Nothing here skips: a missing tool fails the test. Usage: http_generate_test.py SERVER CLI SOURCE_DIR
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import server_harness

SERVER = sys.argv[1] if len(sys.argv) > 1 else None
CLI = sys.argv[2] if len(sys.argv) > 2 else None
SOURCE = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("REFORMER_SOURCE_DIR", ".")
MODEL_DIR = os.path.join(SOURCE, "models", "default")
DRAIN_TIMEOUT_S = 3
TOKEN = "http-generate-test-token-0001"


class Server(server_harness.Server):
    def __init__(self, *extra):
        super().__init__(SERVER, MODEL_DIR, "--workers", "1", "--threads_per_worker", "1",
                         "--generate_threads_per_worker", "1", "--generate_max_unsent", "2",
                         "--drain_timeout_s", str(DRAIN_TIMEOUT_S), *extra)

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=120)

    def get(self, path, headers=None):
        c = self.connection()
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def post(self, path, body, headers=None):
        """(status, headers, body bytes); `body` a dict (sent as JSON) or bytes."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        c = self.connection()
        try:
            c.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def generate(self, body, model="default"):
        status, _, data = self.post(f"/v2/models/{model}/generate", body)
        if status != 200:
            raise AssertionError(f"generate {body} -> {status} {data!r}")
        return json.loads(data)

    def stream(self, body):
        """(headers, events) of generate_stream."""
        status, headers, data = self.post("/v2/models/default/generate_stream", body)
        if status != 200:
            raise AssertionError(f"generate_stream {body} -> {status} {data!r}")
        return headers, parse_sse(data.decode())

    def metrics(self):
        return self.get("/metrics")[1]


def parse_sse(text):
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        if not block.startswith("data: ") or "\n" in block:
            raise AssertionError(f"not one SSE data line: {block!r}")
        events.append(json.loads(block[len("data: "):]))
    return events


def metric(text, name, labels=None):
    for m in re.finditer(r"^" + re.escape(name) + r"(\{[^}]*\})? (\S+)$", text, re.M):
        if labels is None or all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    return None


def byte_ids(text):
    return [b + 2 for b in text.encode()]


class HttpGenerateTest(server_harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.v1, v1g = cls.compile_stubs(SOURCE, "reformer.proto")
        # A blocked write fails after --http_request_timeout_s (the unread stream of test 5 must outlast its check).
        cls.connect(Server("--http_request_timeout_s", "30"))
        cls.api = v1g.ReformerServiceStub(cls.channel)

    # --- helpers ---------------------------------------------------------------------------------------------
    def grpc_generate(self, params, text=None, ids=None):
        v1 = self.v1
        prompt = v1.Document(text=text) if text is not None else v1.Document(ids=v1.TokenIds(ids=ids))
        req = v1.GenerateRequest(
            prompt=prompt, max_new_tokens=params["max_tokens"], temperature=params.get("temperature", 0),
            top_k=params.get("top_k", 0), top_p=params.get("top_p", 0), seed=params.get("seed", 0),
            stop=params.get("stop", []), ignore_eos=params.get("ignore_eos", False),
            mode=v1.DECODE_MODE_RECOMPUTE if params.get("mode") == "recompute" else v1.DECODE_MODE_CACHED)
        msgs = list(self.api.Generate(req, timeout=120))
        return [t for m in msgs for t in m.token_ids], "".join(m.text for m in msgs), msgs[-1]

    def offline(self, prompt, params):
        cmd = [CLI, "generate", "--model", MODEL_DIR, "--prompt", prompt, "--max_new_tokens",
               str(params["max_tokens"]), "--json", "--threads", "1"]
        for k in ("temperature", "top_k", "top_p", "seed", "mode"):
            if k in params:
                cmd += ["--" + k, str(params[k])]
        if params.get("ignore_eos"):
            cmd.append("--ignore_eos")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout.strip().splitlines()[0])

    def wait_idle(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.server.metrics()
            if metric(text, "reformer_generate_active_sequences") == 0 and \
                    metric(text, "reformer_generate_cache_bytes") == 0:
                return
            time.sleep(0.1)
        self.fail("active sequences / cache bytes did not return to 0:\n" +
                  "\n".join(l for l in self.server.metrics().splitlines() if "reformer_generate_" in l))

    # --- 1. same tokens as gRPC and offline ------------------------------------------------------------------
    def test_1_generate_equals_grpc_and_offline(self):
        prompt = "And God said"
        cases = [
            {"max_tokens": 40, "ignore_eos": True},
            {"max_tokens": 30, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 7},
            {"max_tokens": 12, "mode": "recompute"},
        ]
        for params in cases:
            with self.subTest(params=params):
                got = self.server.generate({"text_input": prompt, "parameters": params})
                ids, text, last = self.grpc_generate(params, text=prompt)
                self.assertEqual(got["output_ids"], ids)
                self.assertEqual(got["text_output"], text)
                self.assertEqual(got["model_name"], "default")
                self.assertEqual(got["finish_reason"], "length")
                self.assertEqual(got["usage"]["prompt_tokens"], len(prompt))
                self.assertEqual(got["usage"]["generated_tokens"], params["max_tokens"])
                self.assertNotEqual(got["seed"], 0)
                if "seed" in params:
                    self.assertEqual(got["seed"], params["seed"])
                    self.assertEqual(last.seed, params["seed"])
                off = self.offline(prompt, params)
                self.assertEqual(got["output_ids"], off["new_tokens"])
                self.assertEqual(off["finish_reason"], "length")
        # The prompt is never part of the answer; text is the new ids' bytes.
        got = self.server.generate({"text_input": prompt, "parameters": {"max_tokens": 40, "ignore_eos": True}})
        self.assertEqual(got["text_output"].encode(), bytes(i - 2 for i in got["output_ids"]))
        print(f"\n{prompt!r} -> {got['text_output']!r}")

    def test_1b_input_ids_path(self):
        prompt = "In the beginning"
        by_text = self.server.generate({"text_input": prompt, "parameters": {"max_tokens": 20}})
        by_ids = self.server.generate({"input_ids": byte_ids(prompt), "max_tokens": 20})  # top-level parameter
        self.assertEqual(by_ids["output_ids"], by_text["output_ids"])
        self.assertEqual(by_ids["text_output"], by_text["text_output"])
        ids, _, _ = self.grpc_generate({"max_tokens": 20}, ids=byte_ids(prompt))
        self.assertEqual(by_ids["output_ids"], ids)
        # The default max_tokens is 16; the client's id comes back.
        d = self.server.generate({"input_ids": byte_ids(prompt), "id": "req-1"})
        self.assertEqual(len(d["output_ids"]), 16)
        self.assertEqual(d["id"], "req-1")
        # Versioned path and logprobs.
        status, _, data = self.server.post("/v2/models/default/versions/1/generate",
                                           {"input_ids": byte_ids(prompt),
                                            "parameters": {"max_tokens": 5, "return_logprobs": True}})
        self.assertEqual(status, 200, data)
        d = json.loads(data)
        self.assertEqual(len(d["logprobs"]), 5)
        self.assertTrue(all(lp <= 0 for lp in d["logprobs"]))

    # --- 2. streaming ----------------------------------------------------------------------------------------
    def test_2_stream_concatenates_to_generate(self):
        cases = [
            {"max_tokens": 40, "ignore_eos": True},
            # Hot sampling: bytes >= 0x80 that split UTF-8 characters across steps (held back, then whole).
            {"max_tokens": 60, "temperature": 10, "seed": 3, "ignore_eos": True},
        ]
        for params in cases:
            with self.subTest(params=params):
                body = {"text_input": "And God said", "parameters": params}
                whole = self.server.generate(body)
                headers, events = self.server.stream(body)
                self.assertTrue(headers["Content-Type"].startswith("text/event-stream"), headers)
                self.assertEqual(headers.get("Transfer-Encoding"), "chunked")
                self.assertGreater(len(events), 1)
                self.assertEqual([t for e in events for t in e["output_ids"]], whole["output_ids"])
                self.assertEqual("".join(e["text_output"] for e in events), whole["text_output"])
                for e in events[:-1]:
                    self.assertNotIn("finish_reason", e)
                self.assertEqual(events[-1]["finish_reason"], "length")
                self.assertEqual(events[-1]["usage"]["generated_tokens"], params["max_tokens"])
                self.assertEqual(events[-1]["seed"], whole["seed"] if "seed" in params else events[-1]["seed"])

    # --- 3. finish reasons -----------------------------------------------------------------------------------
    def test_3_finish_reasons(self):
        base = {"text_input": "And God said"}
        # eos: temperature 10 with seed 1 samples EOS (id 2) at step 135 on this model (600 allowed).
        hot = {"max_tokens": 600, "temperature": 10, "seed": 1}
        eos = self.server.generate({**base, "parameters": hot})
        self.assertEqual(eos["finish_reason"], "eos")
        self.assertEqual(eos["output_ids"][-1], 2)
        self.assertLess(len(eos["output_ids"]), 600)
        past = self.server.generate({**base, "parameters": {**hot, "ignore_eos": True}})
        self.assertEqual(past["finish_reason"], "length")
        self.assertEqual(past["output_ids"][:len(eos["output_ids"])], eos["output_ids"])
        _, events = self.server.stream({**base, "parameters": hot})
        self.assertEqual(events[-1]["finish_reason"], "eos")
        # stop: a string from the middle of a greedy text ends the same run before it.
        greedy = self.server.generate({**base, "parameters": {"max_tokens": 40, "ignore_eos": True}})
        text = greedy["text_output"]
        stop = text[len(text) // 2:len(text) // 2 + 3]
        for stops in (stop, [stop, "zzzz"]):
            got = self.server.generate({**base, "parameters": {"max_tokens": 40, "ignore_eos": True, "stop": stops}})
            self.assertEqual(got["finish_reason"], "stop")
            self.assertEqual(got["text_output"], text[:text.find(stop)])
        _, events = self.server.stream({**base, "parameters": {"max_tokens": 40, "ignore_eos": True, "stop": stop}})
        self.assertEqual(events[-1]["finish_reason"], "stop")
        self.assertEqual("".join(e["text_output"] for e in events), text[:text.find(stop)])

    # --- 4. bad requests -------------------------------------------------------------------------------------
    def test_4_bad_requests(self):
        t = {"text_input": "And God said"}
        cases = [
            ({**t, "parameters": {"max_tokens": 0}}, "max_new_tokens must be >= 1, got 0"),
            ({**t, "parameters": {"max_tokens": -3}}, "max_new_tokens must be >= 1, got -3"),
            ({**t, "parameters": {"max_tokens": 5000}},
             "prompt (12 tokens) + max_new_tokens (5000) = 5012 exceeds the model's context of 4096 positions"),
            ({**t, "parameters": {"temperature": -0.5}}, "temperature must be a finite number >= 0, got -0.5"),
            ({**t, "parameters": {"temperature": 1e300}}, "temperature must be a finite number >= 0, got inf"),
            ({**t, "parameters": {"top_k": -1}}, "top_k must be >= 0, got -1"),
            ({**t, "parameters": {"top_p": 1.5}}, "top_p must be in [0, 1], got 1.5"),
            ({**t, "parameters": {"top_p": -0.1}}, "top_p must be in [0, 1], got -0.1"),
            ({**t, "parameters": {"mode": "fast"}}, "parameter 'mode' must be \"cached\" or \"recompute\", got \"fast\""),
            ({**t, "parameters": {"max_tokens": "5"}}, "parameter 'max_tokens' must be an integer, got a string"),
            ({**t, "parameters": {"max_tokens": 2.5}}, "parameter 'max_tokens' must be an integer, got 2.5"),
            ({**t, "parameters": {"temperature": "hot"}}, "parameter 'temperature' must be a number, got a string"),
            ({**t, "parameters": {"ignore_eos": 1}}, "parameter 'ignore_eos' must be a boolean, got 1"),
            ({**t, "parameters": {"seed": -1}}, "parameter 'seed' must be >= 0, got -1"),
            ({**t, "parameters": {"stop": [1]}}, "parameter 'stop' must be a string or a list of strings, got 1"),
            ({**t, "parameters": {"stop": ""}}, "stop string 0 is empty"),
            ({**t, "parameters": {"stop": ["s"] * 17}}, "more than 16 stop strings"),
            ({**t, "parameters": {"max_token": 3}}, "unknown parameter 'max_token' (known: max_tokens,"),
            ({**t, "parameters": {"max_tokens": 3, "stream": True}}, "parameter 'stream' is true"),
            ({**t, "parameters": [1]}, "'parameters' must be an object"),
            ({**t, "max_tokens": 3, "parameters": {"max_tokens": 4}}, "'max_tokens' is given twice"),
            ({"text_input": 5}, "'text_input' must be a string"),
            ({"text_input": ["a"]}, "'text_input' must be a string"),
            ({}, "the request needs 'text_input' (text) or 'input_ids' (token ids)"),
            ({**t, "input_ids": [3]}, "give 'text_input' or 'input_ids', not both"),
            ({"text_input": ""}, "the prompt is empty"),
            ({"input_ids": []}, "the prompt is empty"),
            ({"input_ids": [3, 258]}, "prompt token id 258 at position 1 is outside [0, 258)"),
            ({"input_ids": [3, -1]}, "prompt token id -1 at position 1 is outside [0, 258)"),
            ({"input_ids": [3, 2 ** 40]}, f"prompt token id {2 ** 40} at position 1 is outside [0, 258)"),
            ({"input_ids": [3, 2.5]}, "input_ids[1] must be an integer token id, got 2.5"),
            ({"input_ids": [3, "a"]}, "input_ids[1] must be an integer token id, got a string"),
            ({"input_ids": [[3]]}, "'input_ids' must be a flat list of token ids"),
            ({"input_ids": [3] * 4097}, "'input_ids' has more than 4096 ids"),
            ({"foo": 1, **t}, "unknown key 'foo'"),
        ]
        for body, message in cases:
            with self.subTest(body=str(body)[:80]):
                for action in ("generate", "generate_stream"):
                    status, headers, data = self.server.post(f"/v2/models/default/{action}", body)
                    if action == "generate_stream" and "stream" in json.dumps(body):
                        continue  # stream: true is the stream endpoint's own business
                    self.assertEqual(status, 400, data)
                    self.assertTrue(headers["Content-Type"].startswith("application/json"))
                    self.assertIn(message, json.loads(data)["error"])
        for raw, message in ((b"[1]", "the body must be a JSON object"), (b"{\"text_input\": ", "not valid JSON"),
                             (b"", "not valid JSON")):
            status, _, data = self.server.post("/v2/models/default/generate", raw)
            self.assertEqual(status, 400, data)
            self.assertIn(message, json.loads(data)["error"])
        status, _, data = self.server.post("/v2/models/other/generate", {"text_input": "x"})
        self.assertEqual(status, 404)
        self.assertIn("model 'other' is not served here", json.loads(data)["error"])
        status, _, data = self.server.post("/v2/models/default/versions/9/generate_stream", {"text_input": "x"})
        self.assertEqual(status, 404)
        self.assertEqual(self.server.get("/v2/models/default/generate")[0], 405)
        # The server is fine afterwards.
        self.assertEqual(len(self.server.generate({"text_input": "x", "parameters": {"max_tokens": 3}})["output_ids"]), 3)

    # --- 5. disconnects free the cache -----------------------------------------------------------------------
    def raw_request(self, action, body, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
        s.settimeout(60)
        s.connect(("127.0.0.1", self.server.http_port))
        data = json.dumps(body).encode()
        s.sendall(f"POST /v2/models/default/{action} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return s

    def wait_active(self, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.server.metrics()
            if metric(text, "reformer_generate_active_sequences") == n and \
                    metric(text, "reformer_generate_cache_bytes") > 0:
                return
            time.sleep(0.05)
        self.fail(f"never saw {n} active sequence(s) holding cache")

    def test_5_disconnect_frees_cache(self):
        # Recompute mode over 4000 tokens takes minutes: the sequence is surely running when the client leaves.
        long = {"text_input": "And God said", "parameters": {"max_tokens": 4000, "ignore_eos": True, "mode": "recompute"}}
        before = metric(self.server.metrics(), "reformer_requests_total",
                        {"method": "REST.GenerateStream", "code": "Canceled"}) or 0
        s = self.raw_request("generate_stream", long)
        head = b""
        while b"data: " not in head:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "the stream ended early")
            head += chunk
        self.assertIn(b"200 OK", head)
        self.wait_active(1)
        s.close()
        self.wait_idle()
        deadline = time.time() + 30
        while (metric(self.server.metrics(), "reformer_requests_total",
                      {"method": "REST.GenerateStream", "code": "Canceled"}) or 0) < before + 1:
            self.assertLess(time.time(), deadline, "the cancelled stream was not counted")
            time.sleep(0.05)
        # The same for /generate: the client leaves while the answer is being computed.
        s = self.raw_request("generate", long)
        self.wait_active(1)
        s.close()
        self.wait_idle()
        # A stream whose client does not read: once the socket buffers are full, the handler's blocked write
        # leaves its events unsent and the sequence pauses (--generate_max_unsent 2) holding its cache, far
        # short of its 4000 tokens (which take a few seconds of cached steps unpaused); leaving frees it too.
        tokens_before = metric(self.server.metrics(), "reformer_generated_tokens_total")
        # Every event echoes the client's id: 16 KB a token, far beyond what the sockets buffer.
        s = self.raw_request("generate_stream", {"text_input": "And God said", "id": "i" * 16384,
                                                 "parameters": {"max_tokens": 4000, "ignore_eos": True}},
                             rcvbuf=4096)
        self.wait_active(1)
        time.sleep(2)
        text = self.server.metrics()
        self.assertEqual(metric(text, "reformer_generate_active_sequences"), 1)
        generated = metric(text, "reformer_generated_tokens_total") - tokens_before
        self.assertLess(generated, 4000)
        s.close()
        self.wait_idle()
        print(f"\nan unread stream paused after {generated:.0f} of 4000 tokens")

    # --- 6. bearer tokens: HTTP and reformer-cli -------------------------------------------------------------
    def test_6_auth(self):
        tokens = os.path.join(self.tmp.name, "tokens.txt")
        with open(tokens, "w") as f:
            f.write(f"alice:{TOKEN}\n")
        server = Server("--auth_tokens_file", tokens)
        try:
            body = {"text_input": "And God said", "parameters": {"max_tokens": 8}}
            for action in ("generate", "generate_stream"):
                status, headers, data = server.post(f"/v2/models/default/{action}", body)
                self.assertEqual(status, 401, data)
                self.assertIn("Bearer", headers["WWW-Authenticate"])
                status, _, _ = server.post(f"/v2/models/default/{action}", body,
                                           {"Authorization": "Bearer wrong-token-000000000000"})
                self.assertEqual(status, 401)
                status, _, data = server.post(f"/v2/models/default/{action}", body,
                                              {"Authorization": "Bearer " + TOKEN})
                self.assertEqual(status, 200, data)
            self.assertIn('method="REST.Generate",tenant="alice"', server.metrics())
            self.cli_token(server)
        finally:
            server.kill()

    def cli_token(self, server):
        addr = f"127.0.0.1:{server.grpc_port}"
        token_file = os.path.join(self.tmp.name, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        env = {k: v for k, v in os.environ.items() if k != "REFORMER_TOKEN"}

        def cli(*args, extra_env=None):
            return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120,
                                  env={**env, **(extra_env or {})})
        out = cli("info", "--server", addr)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("(16)", out.stderr)  # UNAUTHENTICATED
        out = cli("info", "--server", addr, "--token_file", token_file)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli("info", "--server", addr, extra_env={"REFORMER_TOKEN": TOKEN})
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli("health", "--server", addr, "--token_file", token_file)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli("generate", "--server", addr, "--prompt", "And God said", "--max_new_tokens", "8", "--json",
                  "--token_file", token_file)
        self.assertEqual(out.returncode, 0, out.stderr)
        http_ids = server.post("/v2/models/default/generate",
                               {"text_input": "And God said", "parameters": {"max_tokens": 8}},
                               {"Authorization": "Bearer " + TOKEN})[2]
        self.assertEqual(json.loads(out.stdout)["new_tokens"], json.loads(http_ids)["output_ids"])
        out = cli("generate", "--server", addr, "--prompt", "And God said", "--max_new_tokens", "8")
        self.assertEqual(out.returncode, 1)
        out = cli("info", "--server", addr, "--token_file", os.path.join(self.tmp.name, "missing"))
        self.assertEqual(out.returncode, 2)
        self.assertIn("cannot read a token from --token_file", out.stderr)
        out = cli("info", "--server", addr, extra_env={"REFORMER_TOKEN": "has space"})
        self.assertEqual(out.returncode, 2)
        self.assertNotIn("has space", out.stderr)

    # --- never-fit cache: the REST status of a RESOURCE_EXHAUSTED admission --------------------------------------
    def test_7_cache_that_never_fits(self):
        # 15 MB: the step buffers and a short prompt's cache fit; a 3000-token prompt's cache (about 20 MB) never can.
        server = Server("--memory_budget_bytes", "15000000")
        try:
            for action in ("generate", "generate_stream"):
                status, _, data = server.post(f"/v2/models/default/{action}",
                                              {"text_input": "a" * 3000, "parameters": {"max_tokens": 4}})
                self.assertEqual(status, 413, data)
                self.assertRegex(json.loads(data)["error"], r"the generation needs \d+ bytes .* above the \d+ bytes "
                                                            r"a sequence can ever have")
            self.assertEqual(len(server.generate({"text_input": "a" * 10, "parameters": {"max_tokens": 4}})
                                 ["output_ids"]), 4)
        finally:
            server.kill()

    # --- 8. SIGTERM ------------------------------------------------------------------------------------------
    def test_9_sigterm(self):
        long = {"text_input": "And God said", "parameters": {"max_tokens": 4000, "ignore_eos": True, "mode": "recompute"}}
        s = self.raw_request("generate_stream", long)
        received = []

        def read():
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                received.append(chunk)
        t = threading.Thread(target=read)
        t.start()
        self.wait_active(1)
        start = time.time()
        self.server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, headers, data = self.server.post("/v2/models/default/generate", {"text_input": "x"})
        self.assertEqual(status, 503, data)
        self.assertEqual(headers.get("Retry-After"), "1")
        code = self.server.proc.wait(timeout=DRAIN_TIMEOUT_S + 20)
        t.join(timeout=30)
        s.close()
        self.assertEqual(code, 0, self.server.stderr_tail())
        text = b"".join(received).decode(errors="replace")
        self.assertIn('data: {"error":"the server is shutting down', text)
        self.assertTrue(text.endswith("0\r\n\r\n"), text[-200:])  # the chunked body was ended
        print(f"\nSIGTERM with a running HTTP stream: exit {code} after {time.time() - start:.1f} s "
              f"(--drain_timeout_s={DRAIN_TIMEOUT_S})")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
