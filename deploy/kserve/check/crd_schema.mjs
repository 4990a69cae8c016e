// Validation of custom resources against a CRD's openAPIV3Schema with ajv, as strict as `kubectl apply`
// (server-side strict field validation, the default since Kubernetes 1.25 for kubectl):
// - unknown fields are errors: every object schema that lists `properties` and says nothing about
//   `additionalProperties` (and has no x-kubernetes-preserve-unknown-fields) gets additionalProperties: false;
// - the Kubernetes extensions are real keywords: x-kubernetes-list-type map (unique by x-kubernetes-list-map-keys)
//   and set (unique items), x-kubernetes-int-or-string; the purely descriptive ones are declared as no-ops;
// - formats int32/int64 are range-checked, date-time comes from ajv-formats.
// Not evaluated: defaults and CEL rules (x-kubernetes-validations; none in the CRDs used here, which is
// asserted), and ObjectMeta (the CRD gives `metadata: {type: object}`; the API server checks it; check-kserve
// validates it with kubernetes-models' ObjectMeta).
import crypto from "node:crypto";
import fs from "node:fs";
import Ajv from "ajv";
import addFormats from "ajv-formats";
import yaml from "js-yaml";

export function sha256(file) {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

function strictify(s, stats) {
  if (!s || typeof s !== "object") return;
  if (Array.isArray(s)) { s.forEach((x) => strictify(x, stats)); return; }
  if (s["x-kubernetes-validations"]) throw new Error("CRD has CEL rules (x-kubernetes-validations), which this check cannot evaluate");
  if (s.properties && s.additionalProperties === undefined && !s["x-kubernetes-preserve-unknown-fields"]) {
    s.additionalProperties = false;
    ++stats.closed;
  }
  for (const k of ["properties", "patternProperties", "definitions"]) {
    if (s[k]) Object.values(s[k]).forEach((x) => strictify(x, stats));
  }
  for (const k of ["items", "additionalProperties", "not"]) {
    if (s[k] && typeof s[k] === "object") strictify(s[k], stats);
  }
  for (const k of ["anyOf", "allOf", "oneOf"]) if (s[k]) strictify(s[k], stats);
}

function listTypeKeyword() {
  function validate(listType, data, parentSchema) {
    if (!Array.isArray(data) || listType === "atomic") return true;
    const keyOf = listType === "map"
      ? (item) => JSON.stringify((parentSchema["x-kubernetes-list-map-keys"] ?? []).map((k) => item?.[k] ?? null))
      : (item) => JSON.stringify(item);
    const seen = new Set();
    for (const item of data) {
      const key = keyOf(item);
      if (seen.has(key)) {
        validate.errors = [{ keyword: "x-kubernetes-list-type", message: `duplicate ${listType} entry ${key}`, params: {} }];
        return false;
      }
      seen.add(key);
    }
    return true;
  }
  return { keyword: "x-kubernetes-list-type", type: "array", schemaType: "string", errors: true, validate };
}

export function makeAjv() {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictRequired: false, strictTuples: false });
  addFormats(ajv, ["date-time"]);
  ajv.addFormat("int32", { type: "number", validate: (x) => Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 31 });
  ajv.addFormat("int64", { type: "number", validate: (x) => Number.isSafeInteger(x) });
  ajv.addKeyword(listTypeKeyword());
  ajv.addKeyword({ keyword: "x-kubernetes-int-or-string", schemaType: "boolean",
    validate: (on, data) => !on || typeof data === "string" || Number.isInteger(data) });
  for (const k of ["x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-preserve-unknown-fields"]) {
    ajv.addKeyword({ keyword: k });
  }
  return ajv;
}

// Returns { kind, apiVersion, validate(doc) -> [messages] } for the CRD's served storage version.
// `forbid`: spec fields this deployment does not use (e.g. the InferenceService's canary, explainer and
// transformer); their schemas are replaced by one that rejects their presence, which is stricter and cuts
// ajv's compile time of the 1.9 MB InferenceService schema about threefold.
export function crdValidator(ajv, file, { forbid = [] } = {}) {
  const crd = yaml.load(fs.readFileSync(file, "utf8"));
  const version = crd.spec.versions.find((v) => v.served && v.storage);
  const schema = structuredClone(version.schema.openAPIV3Schema);
  for (const field of forbid) {
    if (!schema.properties.spec.properties[field]) throw new Error(`${file}: no spec.${field} to forbid`);
    schema.properties.spec.properties[field] = { not: {} };
  }
  const stats = { closed: 0 };
  strictify(schema, stats);
  const compiled = ajv.compile(schema);
  const apiVersion = `${crd.spec.group}/${version.name}`;
  return {
    kind: crd.spec.names.kind, apiVersion, closedObjects: stats.closed,
    validate(doc) {
      if (doc.apiVersion !== apiVersion) return [`apiVersion ${doc.apiVersion}, the CRD serves ${apiVersion}`];
      if (compiled(doc)) return [];
      return compiled.errors.map((e) => `${e.instancePath || "/"} ${e.message}${
        e.keyword === "additionalProperties" ? ` '${e.params.additionalProperty}'` : ""}`);
    },
  };
}
