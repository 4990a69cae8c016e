#!/usr/bin/env node
// KServe v2 REST conformance of reformer-server (issue 13 item 3): real requests to a real server, each
// request and response validated against the Open Inference Protocol OpenAPI document with openapi-backend.
//   node rest_conformance.mjs --server BIN --model DIR   run cases.mjs (metadata, health, inference, tokens)
//   node rest_conformance.mjs --self-test               the validator catches broken exchanges, and every
//                                                       case's request is valid (or caught, when marked)
// Exit 0 only when every case passed; the last line is "N passed, N failed". See README.md.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AUTH_TOKEN } from "./auth_cases.mjs";
import { CASES } from "./cases.mjs";
import { loadSpec } from "./lib/spec.mjs";
import { ServerProcess, httpRequest } from "./lib/server.mjs";
import { checkRequest, checkResponse, makeValidator, splitBody } from "./lib/validate.mjs";
import { selfTest } from "./self_test.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_SPEC = path.resolve(here, "../../third_party/kserve/open_inference_rest.yaml");

function parseArgs(argv) {
  const o = { spec: DEFAULT_SPEC, modelName: "conformance", selfTest: false };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const value = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
    if (a === "--server") o.server = value();
    else if (a === "--model") o.model = value();
    else if (a === "--model-name") o.modelName = value();
    else if (a === "--spec") o.spec = value();
    else if (a === "--self-test") o.selfTest = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.selfTest && (!o.server || !o.model)) throw new Error("--server BIN and --model DIR are needed");
  return o;
}

// One case: build the request, validate it, send it, validate the response, check status/json/headers.
async function runCase(api, server, c, ctx) {
  const request = c.req(ctx);
  const label = `${request.method} ${request.path}`;
  const checked = checkRequest(api, request);
  const findings = c.requestInvalid ? [] : [...checked.findings];
  if (!checked.op) return checked.findings;
  const response = await httpRequest({ port: server.httpPort, ...request });
  if (response.status !== c.status) findings.push(`${label}: status ${response.status}, want ${c.status}: ${response.body.toString().slice(0, 200)}`);
  findings.push(...checkResponse(api, checked.op, checked.json, response, `${label} -> ${response.status}`));
  for (const [h, re] of Object.entries(c.headers ?? {})) {
    if (!re.test(String(response.headers[h] ?? ""))) findings.push(`${label}: header ${h}: ${JSON.stringify(response.headers[h])}`);
  }
  if (c.json && response.status === c.status) {
    const part = splitBody(response.headers, response.body);
    let j;
    try { j = JSON.parse(part.json.toString()); } catch { j = undefined; }
    const f = j === undefined ? "body is not JSON" : c.json(j, ctx);
    if (f) findings.push(`${label}: ${f}`);
  }
  return findings;
}

async function runPhase(api, server, cases, ctx, tally) {
  for (const c of cases) {
    let findings;
    try {
      findings = await runCase(api, server, c, ctx);
    } catch (e) {
      findings = [`exception: ${e.message}`];
    }
    console.log(`${findings.length === 0 ? "ok  " : "FAIL"} [${c.phase}] ${c.name}`);
    for (const f of findings) console.log(`       ${f}`);
    ++tally[findings.length === 0 ? "passed" : "failed"];
  }
}

async function waitStatus(port, pathName, status, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await httpRequest({ port, method: "GET", path: pathName }).catch(() => null);
    if (r?.status === status) return true;
    await new Promise((res) => setTimeout(res, 20));
  }
  return false;
}

// The "auth" phase: a second server whose tokens file holds AUTH_TOKEN; it must also exit 0 on SIGTERM.
async function runAuthPhase(opts, api, ctx, tally) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rest-conformance-"));
  const tokens = path.join(dir, "tokens");
  fs.writeFileSync(tokens, `conformance:${AUTH_TOKEN}\n`);
  let server;
  try {
    server = await ServerProcess.start(opts.server, ["--model_dir", opts.model, "--model_name", opts.modelName,
      "--workers", "1", "--threads_per_worker", "1", "--auth_tokens_file", tokens]);
    await server.waitReady();
    await runPhase(api, server, CASES.filter((c) => c.phase === "auth"), ctx, tally);
  } finally {
    if (server) {
      const { code, signal } = await server.stop();
      console.log(`${code === 0 ? "ok  " : "FAIL"} [auth] server exit after SIGTERM: code ${code}${signal ? ` signal ${signal}` : ""}`);
      ++tally[code === 0 ? "passed" : "failed"];
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function runAgainstServer(opts, api) {
  const config = JSON.parse(fs.readFileSync(path.join(opts.model, "config.json"), "utf8"));
  const ctx = { model: opts.modelName, version: "1", vocab: config.vocab_size };
  const cases = CASES;
  // --drain_min_s keeps the ports up after SIGTERM so the "draining" phase can talk to the server.
  const server = await ServerProcess.start(opts.server, ["--model_dir", opts.model, "--model_name", opts.modelName,
    "--workers", "1", "--threads_per_worker", "1", "--drain_min_s", "8", "--drain_timeout_s", "10",
    "--max_response_bytes", String(4 << 20)]);
  const tally = { passed: 0, failed: 0 };
  try {
    await server.waitReady();
    await runPhase(api, server, cases.filter((c) => c.phase === "ready"), ctx, tally);
    server.sigterm();
    if (!(await waitStatus(server.httpPort, "/v2/health/ready", 503, 5000))) {
      console.log("FAIL readiness did not turn 503 after SIGTERM");
      ++tally.failed;
    }
    await runPhase(api, server, cases.filter((c) => c.phase === "draining"), ctx, tally);
  } finally {
    const { code, signal } = await server.stop();
    const ok = code === 0;
    console.log(`${ok ? "ok  " : "FAIL"} server exit after SIGTERM: code ${code}${signal ? ` signal ${signal}` : ""}`);
    if (!ok) console.log(Buffer.concat(server.stderr).toString().slice(-2000));
    ++tally[ok ? "passed" : "failed"];
  }
  await runAuthPhase(opts, api, ctx, tally);
  return tally;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { definition, readings } = loadSpec(opts.spec);
  console.log(`document: ${path.relative(process.cwd(), opts.spec)}; readings: ${readings.map(([n, k]) => `${n} (${k})`).join(", ")}`);
  const api = await makeValidator(definition);
  const tally = opts.selfTest ? await selfTest(api, CASES) : await runAgainstServer(opts, api);
  if (tally.passed + tally.failed === 0) tally.failed = 1;  // nothing ran: never a pass
  console.log(`${tally.passed} passed, ${tally.failed} failed`);
  process.exitCode = tally.failed === 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(`rest_conformance: ${e.stack ?? e}`);
  console.log("0 passed, 1 failed");
  process.exitCode = 1;
});
