// Checks one real HTTP exchange against the OpenAPI document with openapi-backend (routing, request and
// response validation by its ajv-compiled schemas). What the document cannot express is checked here and
// named in each finding: the status must be documented for the operation, a documented JSON body must come
// as application/json (or as the binary extension's JSON header + tensors), the request "id" is echoed, and
// binary sizes add up (third_party/kserve/README.md, "Binary tensor data extension").
import { OpenAPIBackend } from "openapi-backend";

export async function makeValidator(definition) {
  // strict: the (read) document itself must be valid OpenAPI 3.0, or init() throws.
  const api = new OpenAPIBackend({ definition, strict: true, validate: true, quick: false,
    ajvOpts: { allErrors: true, strict: false } });
  await api.init();
  return api;
}

// The documented response for a status: exact code, then the NXX range, then "default" (OpenAPI 3.0 §4.7.16).
export function documentedResponse(operation, status) {
  const r = operation.responses ?? {};
  return r[String(status)] ?? r[`${Math.floor(status / 100)}XX`] ?? r.default ?? null;
}

// Splits a body into its JSON part and the binary tail (Inference-Header-Content-Length), or all JSON.
export function splitBody(headers, body) {
  const h = headers["inference-header-content-length"];
  if (h === undefined) return { json: body, binary: Buffer.alloc(0), headerLength: null };
  const n = Number(h);
  if (!Number.isInteger(n) || n < 0 || n > body.length) {
    return { error: `Inference-Header-Content-Length ${h} outside the body (${body.length} bytes)` };
  }
  return { json: body.subarray(0, n), binary: body.subarray(n), headerLength: n };
}

function parseJson(buf, what, findings) {
  try {
    return JSON.parse(buf.toString("utf8"));
  } catch (e) {
    findings.push(`${what}: body is not JSON (${e.message}): ${buf.toString("utf8").slice(0, 120)}`);
    return undefined;
  }
}

function ajvErrors(errors) {
  return (errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}${e.params ? " " + JSON.stringify(e.params) : ""}`).join("; ");
}

// Binary extension: tensors with parameters.binary_data_size have no data, and their sizes add up to the tail.
function checkBinaryTensors(tensors, tail, what, findings) {
  let sum = 0;
  for (const t of tensors ?? []) {
    const size = t?.parameters?.binary_data_size;
    if (size === undefined) continue;
    if ("data" in t) findings.push(`${what}: tensor ${t.name} has both binary_data_size and data`);
    sum += Number(size);
  }
  if (sum !== tail.length) findings.push(`${what}: binary_data_size adds up to ${sum} bytes, the body has ${tail.length} after the JSON`);
}

// The request side: which operation, is the request valid for it (binary bodies: their JSON part).
// request = { method, path, headers, body (Buffer|null) }. Returns { op, json, findings }.
export function checkRequest(api, request) {
  const findings = [];
  const label = `${request.method} ${request.path}`;
  const op = api.router.matchOperation({ method: request.method, path: request.path, headers: request.headers ?? {} });
  if (!op) return { op: null, json: undefined, findings: [`${label}: no operation of the document matches this request`] };
  let json;
  if (request.body !== null && request.body !== undefined) {
    const part = splitBody(lowerKeys(request.headers ?? {}), request.body);
    if (part.error) findings.push(`${label}: request ${part.error}`);
    else {
      json = parseJson(part.json, `${label}: request`, findings);
      if (part.headerLength !== null && json) checkBinaryTensors(json.inputs, part.binary, `${label}: request`, findings);
    }
  }
  const req = api.validateRequest({ method: request.method, path: request.path, headers: request.headers ?? {}, body: json }, op);
  if (!req.valid) findings.push(`${label}: request invalid (${op.operationId}): ${ajvErrors(req.errors)}`);
  return { op, json, findings };
}

// The response side, for the operation checkRequest found. response = { status, headers (lower-case), body }.
export function checkResponse(api, op, requestJson, response, label) {
  const findings = [];
  const documented = documentedResponse(op, response.status);
  if (!documented) return [`${label}: status ${response.status} is not documented for ${op.operationId}`];
  const schema = documented.content?.["application/json"];
  if (!schema) return findings;  // the document defines no body for this status
  const type = String(response.headers["content-type"] ?? "");
  const part = splitBody(response.headers, response.body);
  if (part.error) return [`${label}: response ${part.error}`];
  const binary = part.headerLength !== null;
  if (!type.startsWith("application/json") && !(binary && type.startsWith("application/octet-stream"))) {
    findings.push(`${label}: Content-Type '${type}' for a documented JSON body`);
  }
  const body = parseJson(part.json, `${label}: response`, findings);
  if (body === undefined) return findings;
  const res = api.validateResponse(body, op, response.status);
  if (!res.valid) findings.push(`${label}: response invalid (${op.operationId}): ${ajvErrors(res.errors)}`);
  if (binary) checkBinaryTensors(body.outputs, part.binary, `${label}: response`, findings);
  if (response.status === 200 && requestJson?.id !== undefined && body.id !== requestJson.id) {
    findings.push(`${label}: request id ${JSON.stringify(requestJson.id)} not echoed (got ${JSON.stringify(body.id)})`);
  }
  return findings;
}

// Both sides of one exchange; findings from either.
export function checkExchange(api, request, response) {
  const r = checkRequest(api, request);
  if (!r.op) return r.findings;
  return [...r.findings, ...checkResponse(api, r.op, r.json, response, `${request.method} ${request.path} -> ${response.status}`)];
}

function lowerKeys(o) {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k.toLowerCase(), v]));
}
