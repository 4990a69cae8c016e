// Loads the Open Inference Protocol REST document (third_party/kserve/open_inference_rest.yaml, verbatim) and
// applies the few documented readings that make it usable by an OpenAPI router and validator. Each reading is
// a named step that must change the document: when an upstream update makes one unnecessary, loading fails
// and names the step, so this file is revisited instead of silently doing nothing. The readings are described
// in tests/conformance/README.md ("How the document is read"); none of them loosens a schema except N5, which
// is the binary tensor data extension as third_party/kserve/README.md summarises it.
import fs from "node:fs";
import yaml from "js-yaml";

const clone = (x) => structuredClone(x);
const ERROR_SCHEMA = {
  server: "#/components/schemas/metadata_server_error_response",
  model: "#/components/schemas/metadata_model_error_response",
  infer: "#/components/schemas/inference_error_response",
};

// N1: the yaml writes path parameters as `${NAME}` (the prose's placeholders); OpenAPI templating is `{NAME}`.
function templatePaths(doc) {
  const out = {};
  let changed = 0;
  for (const [p, item] of Object.entries(doc.paths)) {
    const q = p.replace(/\$\{([A-Za-z_]+)\}/g, "{$1}");
    if (q !== p) ++changed;
    out[q] = item;
  }
  doc.paths = out;
  return changed;
}

// N2: the version segment is optional ("v2/models/<model_name>[/versions/<model_version>]..."): each versioned
// path also exists without it, with the same operation minus the MODEL_VERSION parameter.
function versionlessPaths(doc) {
  let added = 0;
  for (const [p, item] of Object.entries(doc.paths)) {
    const m = p.match(/^\/v2\/models\/\{MODEL_NAME\}\/versions\/\{MODEL_VERSION\}(.*)$/);
    if (!m) continue;
    const q = `/v2/models/{MODEL_NAME}${m[1]}`;
    if (doc.paths[q]) continue;
    const copy = clone(item);
    copy.parameters = (copy.parameters ?? []).filter((x) => x.name !== "MODEL_VERSION");
    for (const op of operationsOf(copy)) op.operationId = `${op.operationId}--no-version`;
    doc.paths[q] = copy;
    ++added;
  }
  return added;
}

// N3: server metadata is `GET v2` in the prose; the yaml lists `/v2/`. Both forms are served.
function serverMetadataWithoutSlash(doc) {
  if (!doc.paths["/v2/"] || doc.paths["/v2"]) return 0;
  const copy = clone(doc.paths["/v2/"]);
  for (const op of operationsOf(copy)) op.operationId = `${op.operationId}--no-slash`;
  doc.paths["/v2"] = copy;
  return 1;
}

// N4: the prose defines each JSON endpoint's failure as "an HTTP error status (typically 400)" whose body is
// that endpoint's error object; the yaml documents only 400, and only for two operations. Add 4XX and 5XX with
// the same error object where nothing is documented. The health endpoints answer by status alone: their
// not-ready 503 carries no documented body; an unknown model on "model ready" gets the model error object.
function errorPlan(path) {
  if (path === "/v2/health/live") return {};                 // liveness cannot fail while the process answers
  if (path === "/v2/health/ready") return { "5XX": null };   // not ready: status only
  if (path.startsWith("/v2/models/") && path.endsWith("/ready")) return { "4XX": "model", "5XX": null };
  if (path.startsWith("/v2/models/") && path.endsWith("/infer")) return { "4XX": "infer", "5XX": "infer" };
  if (path.startsWith("/v2/models/")) return { "4XX": "model", "5XX": "model" };
  if (path === "/v2/" || path === "/v2") return { "4XX": "server", "5XX": "server" };
  throw new Error(`no error reading for path ${path}`);
}

function errorResponses(doc) {
  let added = 0;
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const op of operationsOf(item)) {
      for (const [range, kind] of Object.entries(errorPlan(p))) {
        if (op.responses[range]) continue;
        op.responses[range] = kind
          ? { description: `error: the ${kind} error object (prose)`,
              content: { "application/json": { schema: { $ref: ERROR_SCHEMA[kind] } } } }
          : { description: "not ready: status only" };
        ++added;
      }
    }
  }
  return added;
}

// N5 (binary tensor data extension): a tensor whose parameters carry binary_data_size has no "data" key.
// request_input and response_output require "data" or parameters.binary_data_size; nothing else changes.
function binaryExtension(doc) {
  let changed = 0;
  for (const name of ["request_input", "response_output"]) {
    const s = doc.components.schemas[name];
    if (!s.required.includes("data")) continue;
    s.required = s.required.filter((r) => r !== "data");
    s.anyOf = [
      { required: ["data"] },
      { required: ["parameters"],
        properties: { parameters: { type: "object", required: ["binary_data_size"],
          properties: { binary_data_size: { type: "integer", minimum: 0 } } } } },
    ];
    ++changed;
  }
  return changed;
}

export function operationsOf(pathItem) {
  return ["get", "put", "post", "delete", "patch", "head", "options"].filter((m) => pathItem[m]).map((m) => pathItem[m]);
}

const READINGS = [
  ["N1 ${NAME} path placeholders -> {NAME}", templatePaths],
  ["N2 version-less model paths", versionlessPaths],
  ["N3 /v2 beside /v2/", serverMetadataWithoutSlash],
  ["N4 error statuses carry the endpoint's error object", errorResponses],
  ["N5 binary tensor data extension", binaryExtension],
];

// Returns { definition, readings: [[name, count]] }. Throws when a reading changes nothing.
export function loadSpec(file) {
  const text = fs.readFileSync(file, "utf8");
  if (!text.startsWith("# Copyright 2023 The KServe Authors.")) {
    throw new Error(`${file}: not the verbatim KServe document (its Apache-2.0 header is missing)`);
  }
  const doc = yaml.load(text);
  const readings = [];
  for (const [name, apply] of READINGS) {
    const n = apply(doc);
    if (n === 0) throw new Error(`${file}: reading "${name}" no longer applies; revisit tests/conformance/lib/spec.mjs`);
    readings.push([name, n]);
  }
  return { definition: doc, readings };
}
