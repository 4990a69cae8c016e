// The REST inference exchanges (POST /v2/models/{name}[/versions/{v}]/infer), run by ctest's rest_conformance
// with the metadata cases of cases.mjs. Same shape as cases.mjs; `headers` checks response headers;
// `requestInvalid` marks a request the document itself rejects (malformed on purpose). The server runs with
// --max_response_bytes 4 MiB (rest_conformance.mjs) so the "response too large" case is small to send.
// ctx = { model, version, vocab }.

const JSON_TYPE = { "Content-Type": "application/json" };
const post = (path, body, headers = JSON_TYPE) => ({ method: "POST", path, headers, body: Buffer.from(body) });
const infer = (c, body) => post(`/v2/models/${c.model}/infer`, JSON.stringify(body));
const ids = (rows) => ({ name: "input_ids", datatype: "INT64", shape: [rows.length, rows[0].length], data: rows.flat() });

// Binary tensor data extension: JSON header, then each binary tensor (little-endian, row-major) in JSON order.
function binaryRequest(path, header, tensors) {
  const json = Buffer.from(JSON.stringify(header));
  return post(path, Buffer.concat([json, ...tensors]),
    { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(json.length) });
}
const int32le = (values) => {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeInt32LE(v, 4 * i));
  return b;
};
const int64le = (values) => {
  const b = Buffer.alloc(8 * values.length);
  values.forEach((v, i) => b.writeBigInt64LE(BigInt(v), 8 * i));
  return b;
};
const bytesTensor = (strings) => Buffer.concat(strings.flatMap((s) => {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(Buffer.byteLength(s));
  return [len, Buffer.from(s)];
}));

const output = (name) => (j) => {
  const o = j.outputs?.find((x) => x.name === name);
  return o ? null : `no output ${name} in ${JSON.stringify(j.outputs?.map((x) => x.name))}`;
};
const errorMentions = (re) => (j) => (re.test(j.error ?? "") ? null : `error ${JSON.stringify(j.error)} does not match ${re}`);
const ROWS = [[72, 101, 108, 108], [111, 32, 119, 0]];

export const INFER_CASES = [
  // --- JSON, success ----------------------------------------------------------------------------------------
  { name: "JSON infer, flat data, one output, id echoed", phase: "ready", status: 200, json: output("token_logprobs"),
    req: (c) => infer(c, { id: "req-1", inputs: [ids(ROWS)], outputs: [{ name: "token_logprobs" }] }) },
  { name: "JSON infer, nested data", phase: "ready", status: 200, json: output("embedding"),
    req: (c) => infer(c, { inputs: [{ ...ids(ROWS), data: ROWS }], outputs: [{ name: "embedding" }] }) },
  { name: "JSON infer, attention_mask, all outputs", phase: "ready", status: 200, json: output("logits"),
    req: (c) => infer(c, { inputs: [ids(ROWS), { name: "attention_mask", datatype: "INT64", shape: [2, 4],
      data: [1, 1, 1, 1, 1, 1, 1, 0] }] }) },
  { name: "JSON infer, text BYTES input", phase: "ready", status: 200, json: output("token_ids"),
    req: (c) => infer(c, { inputs: [{ name: "text", datatype: "BYTES", shape: [2], data: ["In the beginning", "Amen."] }],
      outputs: [{ name: "token_ids" }, { name: "lengths" }, { name: "token_logprobs" }] }) },
  { name: "JSON infer, versioned path, priority and timeout", phase: "ready", status: 200, json: output("embedding"),
    req: (c) => post(`/v2/models/${c.model}/versions/${c.version}/infer`, JSON.stringify({
      parameters: { priority: 1, timeout: 30000000 }, inputs: [ids(ROWS)], outputs: [{ name: "embedding" }] })) },
  // --- binary tensor data extension, success ------------------------------------------------------------------
  { name: "binary input, binary_data_output", phase: "ready", status: 200, json: output("token_logprobs"),
    headers: { "inference-header-content-length": /^\d+$/ },
    req: (c) => binaryRequest(`/v2/models/${c.model}/infer`, {
      id: "bin-1", parameters: { binary_data_output: true },
      inputs: [{ name: "input_ids", datatype: "INT64", shape: [2, 4], parameters: { binary_data_size: 64 } }],
      outputs: [{ name: "token_logprobs" }] }, [int64le(ROWS.flat())]) },
  { name: "JSON input, one output binary_data", phase: "ready", status: 200, json: output("embedding"),
    headers: { "inference-header-content-length": /^\d+$/ },
    req: (c) => infer(c, { inputs: [ids(ROWS)],
      outputs: [{ name: "embedding", parameters: { binary_data: true } }, { name: "token_logprobs" }] }) },
  { name: "binary BYTES text input", phase: "ready", status: 200, json: output("token_ids"),
    req: (c) => binaryRequest(`/v2/models/${c.model}/infer`, {
      inputs: [{ name: "text", datatype: "BYTES", shape: [2],
        parameters: { binary_data_size: bytesTensor(["In the beginning", "Amen."]).length } }],
      outputs: [{ name: "token_ids" }] }, [bytesTensor(["In the beginning", "Amen."])]) },
  // --- errors ---------------------------------------------------------------------------------------------------
  { name: "400 malformed JSON", phase: "ready", status: 400, json: errorMentions(/json|parse/i), requestInvalid: true,
    req: (c) => post(`/v2/models/${c.model}/infer`, '{"inputs": [') },
  { name: "400 wrong datatype", phase: "ready", status: 400, json: errorMentions(/datatype|FP32/i),
    req: (c) => infer(c, { inputs: [{ ...ids(ROWS), datatype: "FP32" }] }) },
  { name: "400 shape disagrees with data", phase: "ready", status: 400, json: errorMentions(/shape|element/i),
    req: (c) => infer(c, { inputs: [{ ...ids(ROWS), shape: [2, 5] }] }) },
  { name: "400 id out of range", phase: "ready", status: 400, json: errorMentions(/range|vocab|outside/i),
    req: (c) => infer(c, { inputs: [ids([[1, 2, c.vocab + 5, 3]])] }) },
  { name: "400 binary_data_size disagrees with the body", phase: "ready", status: 400, requestInvalid: true,
    json: errorMentions(/binary|size/i),
    req: (c) => binaryRequest(`/v2/models/${c.model}/infer`, {
      inputs: [{ name: "input_ids", datatype: "INT64", shape: [2, 4], parameters: { binary_data_size: 64 } }] },
    [int64le(ROWS.flat()).subarray(0, 40)]) },
  { name: "JSON infer, INT32 ids and BOOL mask (left padding), all outputs binary", phase: "ready", status: 200,
    json: output("hidden_states"), headers: { "inference-header-content-length": /^\d+$/ },
    req: (c) => infer(c, { parameters: { binary_data_output: true }, inputs: [
      { name: "input_ids", datatype: "INT32", shape: [2, 3], data: [[0, 72, 105], [65, 66, 67]] },
      { name: "attention_mask", datatype: "BOOL", shape: [2, 3], data: [[false, true, true], [true, true, true]] }] }) },
  { name: "binary INT32 ids and BOOL mask, JSON outputs", phase: "ready", status: 200, json: output("logits"),
    req: (c) => binaryRequest(`/v2/models/${c.model}/infer`, {
      inputs: [{ name: "input_ids", datatype: "INT32", shape: [1, 4], parameters: { binary_data_size: 16 } },
        { name: "attention_mask", datatype: "BOOL", shape: [1, 4], parameters: { binary_data_size: 4 } }],
      outputs: [{ name: "logits" }] }, [int32le([72, 101, 108, 0]), Buffer.from([1, 1, 1, 0])]) },
  { name: "400 nested data that does not follow the shape", phase: "ready", status: 400,
    json: errorMentions(/nested|shape/i),
    req: (c) => infer(c, { inputs: [{ ...ids(ROWS), data: [[72, 101, 108], [108, 111, 32, 119, 0, 1]] }] }) },
  { name: "400 INT32 value out of range", phase: "ready", status: 400, json: errorMentions(/INT32/),
    req: (c) => infer(c, { inputs: [{ ...ids([[1, 2, 3]]), datatype: "INT32", data: [1, 2, 4294967296] }] }) },
  { name: "400 Inference-Header-Content-Length beyond the body", phase: "ready", status: 400, requestInvalid: true,
    json: errorMentions(/Inference-Header-Content-Length/),
    req: (c) => {
      const r = binaryRequest(`/v2/models/${c.model}/infer`, {
        inputs: [{ name: "input_ids", datatype: "INT64", shape: [1, 2], parameters: { binary_data_size: 16 } }] },
      [int64le([1, 2])]);
      r.headers["Inference-Header-Content-Length"] = String(r.body.length + 100);
      return r;
    } },
  { name: "400 truncated binary BYTES", phase: "ready", status: 400, json: errorMentions(/runs past the end/),
    req: (c) => {
      const t = bytesTensor(["In the beginning"]).subarray(0, 10);
      return binaryRequest(`/v2/models/${c.model}/infer`, {
        inputs: [{ name: "text", datatype: "BYTES", shape: [1], parameters: { binary_data_size: t.length } }] }, [t]);
    } },
  { name: "413 response above --max_response_bytes", phase: "ready", status: 413, json: errorMentions(/max_response_bytes/),
    req: (c) => infer(c, { inputs: [ids(Array.from({ length: 8 }, () => Array.from({ length: 512 }, (_, i) => 1 + i % 200)))],
      outputs: [{ name: "logits" }] }) },
  { name: "504 deadline (timeout 1 us)", phase: "ready", status: 504, json: errorMentions(/deadline/i),
    req: (c) => infer(c, { parameters: { timeout: 1 }, inputs: [ids(ROWS)], outputs: [{ name: "embedding" }] }) },
  { name: "404 unknown model", phase: "ready", status: 404, json: errorMentions(/no-such-model/),
    req: () => post("/v2/models/no-such-model/infer", JSON.stringify({ inputs: [ids(ROWS)] })) },
  { name: "404 unknown version", phase: "ready", status: 404, json: errorMentions(/version|999/),
    req: (c) => post(`/v2/models/${c.model}/versions/999/infer`, JSON.stringify({ inputs: [ids(ROWS)] })) },
  { name: "413 body over the limit", phase: "ready", status: 413, json: errorMentions(/large|limit|bytes/i),
    req: (c) => {
      // 24 Mi ids as JSON (~48 MiB): over any body limit the server derives from its token limit. The
      // self-test validates the same request with ctx.bigIds small (ajv over 24 Mi elements takes ~30 s).
      const n = c.bigIds ?? 24 << 20;
      return post(`/v2/models/${c.model}/infer`,
        `{"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,${n}],"data":[${"1,".repeat(n - 1)}1]}]}`);
    } },
  { name: "503 while draining, with Retry-After", phase: "draining", status: 503, json: errorMentions(/drain|unavailable|shutting down/i),
    headers: { "retry-after": /^\d+$/ },
    req: (c) => infer(c, { inputs: [ids(ROWS)], outputs: [{ name: "embedding" }] }) },
];
