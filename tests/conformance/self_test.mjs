// Self-test of the harness, no server needed: (1) conforming exchanges pass; (2) each broken variant is caught
// with the expected finding (a validator that accepts everything would fail here); (3) every request of
// cases.mjs routes to an operation of the document and is a valid request of it (or, where marked
// requestInvalid, is caught as invalid).
import { checkExchange, checkRequest } from "./lib/validate.mjs";

const CTX = { model: "m", version: "1", vocab: 258, bigIds: 4096 };  // bigIds: see the 413 case
const JSON_H = { "content-type": "application/json" };
const res = (status, body, headers = JSON_H) => ({ status, headers,
  body: Buffer.isBuffer(body) ? body : Buffer.from(typeof body === "string" ? body : JSON.stringify(body)) });
const get = (path) => ({ method: "GET", path, headers: {}, body: null });
const post = (path, body) => ({ method: "POST", path, headers: { "Content-Type": "application/json" },
  body: Buffer.from(JSON.stringify(body)) });

const SERVER_META = { name: "reformer-server", version: "0.1.0", extensions: ["parameters"] };
const TENSOR = { name: "input_ids", datatype: "INT64", shape: [-1, -1] };
const MODEL_META = { name: "m", versions: ["1"], platform: "reformer", inputs: [TENSOR], outputs: [TENSOR] };
const INFER_REQ = { id: "7", inputs: [{ name: "input_ids", datatype: "INT64", shape: [1, 2], data: [1, 2] }] };
const OUT = { name: "embedding", datatype: "FP32", shape: [1, 2], data: [0.5, 1.5] };
const INFER_RES = { model_name: "m", id: "7", outputs: [OUT] };

// A binary response: JSON header then the tensor bytes; `extra` bytes appended make the sizes disagree.
function binaryResponse(header, tensorBytes, { extra = 0, headerLength } = {}) {
  const json = Buffer.from(JSON.stringify(header));
  return res(200, Buffer.concat([json, Buffer.alloc(tensorBytes + extra)]),
    { "content-type": "application/octet-stream", "inference-header-content-length": String(headerLength ?? json.length) });
}
const BIN_OUT = { name: "embedding", datatype: "FP32", shape: [1, 2], parameters: { binary_data_size: 8 } };

const GOOD = [
  ["server metadata", get("/v2"), res(200, SERVER_META)],
  ["model metadata, versioned", get("/v2/models/m/versions/1"), res(200, MODEL_META)],
  ["model metadata 404", get("/v2/models/x"), res(404, { error: "model 'x' is not served here" })],
  ["model ready 503 (text)", get("/v2/models/m/ready"), res(503, "NOT_SERVING\n", { "content-type": "text/plain" })],
  ["infer JSON", post("/v2/models/m/infer", INFER_REQ), res(200, INFER_RES)],
  ["infer binary", post("/v2/models/m/infer", INFER_REQ), binaryResponse({ model_name: "m", id: "7", outputs: [BIN_OUT] }, 8)],
  ["infer 400", post("/v2/models/m/infer", INFER_REQ), res(400, { error: "bad shape" })],
];

const MUTANTS = [
  ["server metadata without extensions", get("/v2"), res(200, { name: "s", version: "1" }), /required property 'extensions'/],
  ["server metadata extensions not an array", get("/v2/"), res(200, { ...SERVER_META, extensions: "a" }), /must be array/],
  ["model metadata without platform", get("/v2/models/m"), res(200, { name: "m" }), /required property 'platform'/],
  ["model metadata shape with a string", get("/v2/models/m"),
    res(200, { ...MODEL_META, inputs: [{ ...TENSOR, shape: [-1, "T"] }] }), /shape\/1 must be integer/],
  ["model metadata tensor without datatype", get("/v2/models/m"),
    res(200, { ...MODEL_META, outputs: [{ name: "x", shape: [1] }] }), /required property 'datatype'/],
  ["model error without error", get("/v2/models/x"), res(404, { message: "no" }), /required property 'error'/],
  ["model error not a string", get("/v2/models/x"), res(404, { error: 404 }), /error must be string/],
  ["model 404 as text/plain", get("/v2/models/x"), res(404, "no such model", { "content-type": "text/plain" }),
    /Content-Type 'text\/plain'|not JSON/],
  ["server metadata not JSON", get("/v2"), res(200, "<html>"), /not JSON/],
  ["liveness failing with 500", get("/v2/health/live"), res(500, ""), /status 500 is not documented/],
  ["server ready 404", get("/v2/health/ready"), res(404, ""), /status 404 is not documented/],
  ["path outside the document", get("/v2/models/m/config"), res(200, {}), /no operation of the document/],
  ["infer response without outputs", post("/v2/models/m/infer", INFER_REQ), res(200, { model_name: "m", id: "7" }),
    /required property 'outputs'/],
  ["infer response without model_name", post("/v2/models/m/infer", INFER_REQ), res(200, { id: "7", outputs: [OUT] }),
    /required property 'model_name'/],
  ["infer output without data or binary_data_size", post("/v2/models/m/infer", INFER_REQ),
    res(200, { ...INFER_RES, outputs: [{ name: "o", datatype: "FP32", shape: [1] }] }), /must match a schema in anyOf/],
  ["infer output data of objects", post("/v2/models/m/infer", INFER_REQ),
    res(200, { ...INFER_RES, outputs: [{ ...OUT, data: [{ x: 1 }] }] }), /data\/0/],
  ["infer id not echoed", post("/v2/models/m/infer", INFER_REQ), res(200, { ...INFER_RES, id: "8" }), /not echoed/],
  ["binary sizes disagree", post("/v2/models/m/infer", INFER_REQ),
    binaryResponse({ model_name: "m", id: "7", outputs: [BIN_OUT] }, 8, { extra: 3 }), /adds up to 8 bytes, the body has 11/],
  ["binary header length past the body", post("/v2/models/m/infer", INFER_REQ),
    binaryResponse({ model_name: "m", id: "7", outputs: [BIN_OUT] }, 8, { headerLength: 9999 }), /outside the body/],
  ["binary output with data too", post("/v2/models/m/infer", INFER_REQ),
    binaryResponse({ model_name: "m", id: "7", outputs: [{ ...BIN_OUT, data: [1, 2] }] }, 8), /both binary_data_size and data/],
  ["infer request without inputs", post("/v2/models/m/infer", { id: "1" }), res(400, { error: "x" }),
    /required property 'inputs'/],
  ["infer request input without shape", post("/v2/models/m/infer", { inputs: [{ name: "a", datatype: "INT64", data: [1] }] }),
    res(400, { error: "x" }), /required property 'shape'/],
  ["infer 400 with error as object", post("/v2/models/m/infer", INFER_REQ), res(400, { error: { msg: "x" } }),
    /error must be string/],
];

function report(ok, name, detail, tally) {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? `\n       ${detail}` : ""}`);
  ++tally[ok ? "passed" : "failed"];
}

export async function selfTest(api, cases) {
  const tally = { passed: 0, failed: 0 };
  for (const [name, req, resp] of GOOD) {
    const f = checkExchange(api, req, resp);
    report(f.length === 0, `conforming: ${name}`, f.join(" | "), tally);
  }
  for (const [name, req, resp, pattern] of MUTANTS) {
    const f = checkExchange(api, req, resp);
    report(f.some((x) => pattern.test(x)), `caught: ${name}`, f.length ? "" : "no finding", tally);
  }
  for (const c of cases) {
    const r = checkRequest(api, c.req(CTX));
    const ok = c.requestInvalid ? r.findings.length > 0 : r.op !== null && r.findings.length === 0;
    report(ok, `case request ${c.requestInvalid ? "is caught as invalid" : "is valid"}: ${c.name}`,
      c.requestInvalid ? "" : r.findings.join(" | "), tally);
  }
  return tally;
}
