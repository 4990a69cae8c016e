// The exchanges the harness runs against a real reformer-server (all of them in ctest): the metadata and health
// cases below, then the inference cases of infer_cases.mjs. Each case is one
// request; its response must conform to the OpenAPI document (lib/validate.mjs) AND have the expected status;
// `json` checks what the document cannot know (our model's name, versions). Phases: "ready" runs on a ready
// server, "draining" after SIGTERM while --drain_min_s keeps the ports up (readiness must then be 503), "auth"
// on a second server that requires a bearer token (auth_cases.mjs).
// ctx = { model, version, vocab }.
import { AUTH_CASES } from "./auth_cases.mjs";
import { INFER_CASES } from "./infer_cases.mjs";

const get = (path) => ({ method: "GET", path });
const named = (field, want) => (j, ctx) => (j[field] === want(ctx) ? null : `${field} = ${JSON.stringify(j[field])}, want ${want(ctx)}`);

const METADATA_CASES = [
  { name: "server live", phase: "ready", req: () => get("/v2/health/live"), status: 200 },
  { name: "server ready", phase: "ready", req: () => get("/v2/health/ready"), status: 200 },
  { name: "server metadata /v2", phase: "ready", req: () => get("/v2"), status: 200,
    json: (j) => (Array.isArray(j.extensions) ? null : "extensions missing") },
  { name: "server metadata /v2/", phase: "ready", req: () => get("/v2/"), status: 200 },
  { name: "model metadata", phase: "ready", req: (c) => get(`/v2/models/${c.model}`), status: 200,
    json: (j, c) => named("name", (x) => x.model)(j, c) ??
      (j.outputs?.some((o) => o.name === "logits" && o.shape.at(-1) === c.vocab) ? null : "no logits output [.., vocab]") },
  { name: "model metadata, versioned", phase: "ready", req: (c) => get(`/v2/models/${c.model}/versions/${c.version}`),
    status: 200, json: (j, c) => (j.versions?.includes(c.version) ? null : `versions ${JSON.stringify(j.versions)}`) },
  { name: "model ready", phase: "ready", req: (c) => get(`/v2/models/${c.model}/ready`), status: 200 },
  { name: "model ready, versioned", phase: "ready", req: (c) => get(`/v2/models/${c.model}/versions/${c.version}/ready`),
    status: 200 },
  { name: "unknown model: metadata 404", phase: "ready", req: () => get("/v2/models/no-such-model"), status: 404 },
  { name: "unknown version: metadata 404", phase: "ready", req: (c) => get(`/v2/models/${c.model}/versions/999`),
    status: 404 },
  { name: "unknown model: ready 404", phase: "ready", req: () => get("/v2/models/no-such-model/ready"), status: 404 },
  { name: "unknown version: ready 404", phase: "ready", req: (c) => get(`/v2/models/${c.model}/versions/999/ready`),
    status: 404 },
  // After SIGTERM: not ready (503, status only), still live, metadata still answered.
  { name: "draining: server not ready", phase: "draining", req: () => get("/v2/health/ready"), status: 503 },
  { name: "draining: model not ready", phase: "draining", req: (c) => get(`/v2/models/${c.model}/ready`), status: 503 },
  { name: "draining: server live", phase: "draining", req: () => get("/v2/health/live"), status: 200 },
  { name: "draining: model metadata", phase: "draining", req: (c) => get(`/v2/models/${c.model}`), status: 200 },
];

export const CASES = [...METADATA_CASES, ...INFER_CASES, ...AUTH_CASES];
