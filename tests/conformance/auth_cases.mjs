// Bearer tokens on the REST API (issue 15's --auth_tokens_file, README "Security"): exchanges run by ctest's
// rest_conformance against a second server started with a tokens file holding AUTH_TOKEN (phase "auth").
// Refusals are 401 with the endpoint's error object (reading N4: 4XX) and `WWW-Authenticate: Bearer`; the health
// endpoints stay open; the same requests with the token are answered. Same shape as cases.mjs.
// ctx = { model, version, vocab }.

export const AUTH_TOKEN = "conformance-0123456789abcdef";

const bearer = (token) => ({ Authorization: `Bearer ${token}` });
const get = (path, headers = {}) => ({ method: "GET", path, headers });
const infer = (c, headers) => ({
  method: "POST", path: `/v2/models/${c.model}/infer`,
  headers: { "Content-Type": "application/json", ...headers },
  body: Buffer.from(JSON.stringify({ id: "auth-1", inputs: [{ name: "input_ids", datatype: "INT64", shape: [1, 4],
    data: [72, 101, 108, 108] }], outputs: [{ name: "token_logprobs" }] })),
});
const hasError = (j) => (typeof j.error === "string" && j.error.length > 0 ? null : `no error text: ${JSON.stringify(j)}`);
const NO_CREDENTIALS = { "www-authenticate": /^Bearer realm="reformer-serve"$/ };
const BAD_CREDENTIALS = { "www-authenticate": /^Bearer realm="reformer-serve", error="invalid_token"$/ };

export const AUTH_CASES = [
  { name: "tokens: server live without a token", phase: "auth", req: () => get("/v2/health/live"), status: 200 },
  { name: "tokens: server ready without a token", phase: "auth", req: () => get("/v2/health/ready"), status: 200 },
  { name: "tokens: infer without a token 401", phase: "auth", status: 401, json: hasError, headers: NO_CREDENTIALS,
    req: (c) => infer(c, {}) },
  { name: "tokens: infer with a wrong token 401", phase: "auth", status: 401, json: hasError,
    headers: BAD_CREDENTIALS, req: (c) => infer(c, bearer("wrong-0123456789abcdef")) },
  { name: "tokens: model metadata without a token 401", phase: "auth", status: 401, json: hasError,
    headers: NO_CREDENTIALS, req: (c) => get(`/v2/models/${c.model}`) },
  { name: "tokens: server metadata without a token 401", phase: "auth", status: 401, json: hasError,
    headers: NO_CREDENTIALS, req: () => get("/v2") },
  { name: "tokens: infer with the token", phase: "auth", status: 200, req: (c) => infer(c, bearer(AUTH_TOKEN)),
    json: (j) => (j.id === "auth-1" && j.outputs?.[0]?.name === "token_logprobs" ? null : `unexpected ${JSON.stringify(j)}`) },
  { name: "tokens: model metadata with the token", phase: "auth", status: 200,
    req: (c) => get(`/v2/models/${c.model}`, bearer(AUTH_TOKEN)),
    json: (j, c) => (j.name === c.model ? null : `name ${JSON.stringify(j.name)}`) },
];
