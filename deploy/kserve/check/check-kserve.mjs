#!/usr/bin/env node
// Offline check of reformer-serve's KServe manifests (deploy/kserve).
//
//   node check-kserve.mjs [--dir deploy/kserve] [--crds third_party/kserve/crds] [--server-src server/]
//                         [--adapter deploy/k8s/prometheus-adapter/adapter-config.yaml] [--self-test]
//
// 1. The CRD copies are the verbatim ones (sha256 as in third_party/kserve/README.md).
// 2. ClusterServingRuntime and InferenceService validate against those CRDs' schemas with unknown fields
//    rejected (crd_schema.mjs); their metadata, the HPA, the headless Service and the PodMonitor validate
//    with kubernetes-models / @kubernetes-models/prometheus-operator.
// 3. Policy (what KServe and this server need beyond the schema): see checkRuntime / checkIsvc / checkRest.
// --self-test applies known-bad mutations and requires each to be reported.
// Exit code 0 = all good, 1 = findings (one per line), 2 = usage or environment error.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";
import { crdValidator, makeAjv, sha256 } from "./crd_schema.mjs";
import { checkIsvc, checkRest, checkRuntime } from "./policy.mjs";
import { MUTATIONS } from "./mutations.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const CRD_SHA256 = {
  "serving.kserve.io_clusterservingruntimes.yaml": "f721d19516670d4a81181e231b1e58cbc32c36435969182ae457fad537151cc8",
  "serving.kserve.io_inferenceservices.yaml": "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
};

function parseArgs(argv) {
  const o = { dir: path.resolve(here, ".."), crds: path.join(repoRoot, "third_party/kserve/crds"),
    serverSrc: path.join(repoRoot, "server"),
    adapter: path.join(repoRoot, "deploy/k8s/prometheus-adapter/adapter-config.yaml"), selfTest: false };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const next = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return path.resolve(argv[++i]); };
    if (a === "--dir") o.dir = next();
    else if (a === "--crds") o.crds = next();
    else if (a === "--server-src") o.serverSrc = next();
    else if (a === "--adapter") o.adapter = next();
    else if (a === "--self-test") o.selfTest = true;
    else usage(`unknown argument ${a}`);
  }
  return o;
}

function usage(msg) {
  console.error(`check-kserve: ${msg}`);
  process.exit(2);
}

// The runtime (cluster-scoped, its own file) + the kustomization's resources (only `resources` is used there).
function loadDocs(dir) {
  const kust = yaml.load(fs.readFileSync(path.join(dir, "kustomization.yaml"), "utf8"));
  const extra = Object.keys(kust).filter((k) => !["apiVersion", "kind", "resources"].includes(k));
  if (extra.length) usage(`kustomization.yaml uses ${extra.join(", ")}; this check renders only resources`);
  const files = ["clusterservingruntime.yaml", ...kust.resources];
  return files.flatMap((f) => yaml.loadAll(fs.readFileSync(path.join(dir, f), "utf8")).filter(Boolean));
}

function modelModule(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  if (group === "meta") return `@kubernetes-models/apimachinery/apis/meta/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

async function validateModel(apiVersion, kind, value, where, findings) {
  let mod;
  try {
    mod = await import(modelModule(apiVersion, kind));
  } catch {
    findings.push(`schema: ${where}: no schema for ${apiVersion} ${kind}`);
    return;
  }
  try {
    new (mod[kind] ?? mod.default)(structuredClone(value)).validate();
  } catch (e) {
    findings.push(`schema: ${where}: ${(e.errors ?? []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ") || e.message}`);
  }
}

// What the API server checks in ObjectMeta and the schemas leave out: names (DNS-1123 subdomain; an
// InferenceService's becomes Service names, so KServe wants a DNS-1035 label) and label values.
function checkMetadata(doc, where, findings) {
  const m = doc.metadata ?? {};
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(m.name ?? "")) findings.push(`${where}: name is not a DNS-1123 subdomain`);
  // KServe's Service is `<name>-predictor`, a Service name is a DNS-1035 label (<= 63): name <= 53 characters.
  if (doc.kind === "InferenceService" && !/^[a-z]([-a-z0-9]{0,51}[a-z0-9])?$/.test(m.name ?? "")) {
    findings.push(`${where}: name is not a DNS-1035 label of at most 53 characters (KServe's Service is <name>-predictor)`);
  }
  for (const [k, v] of Object.entries(m.labels ?? {})) {
    if (!/^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/.test(String(v))) findings.push(`${where}: label ${k} value '${v}' is not a valid label value`);
  }
}

async function checkSchemas(docs, crds, findings) {
  for (const doc of docs) {
    const where = `${doc.kind}/${doc.metadata?.name}`;
    checkMetadata(doc, where, findings);
    const crd = crds[doc.kind];
    if (crd) {
      for (const e of crd.validate(doc)) findings.push(`schema: ${where} (CRD): ${e}`);
      await validateModel("meta/v1", "ObjectMeta", doc.metadata ?? {}, `${where} metadata`, findings);
    } else {
      await validateModel(doc.apiVersion, doc.kind, doc, where, findings);
    }
  }
}

export async function checkDocs(docs, ctx, findings) {
  await checkSchemas(docs, ctx.crds, findings);
  const one = (kind) => {
    const found = docs.filter((d) => d.kind === kind);
    if (found.length !== 1) findings.push(`expected exactly one ${kind}, found ${found.length}`);
    return found[0];
  };
  const runtime = one("ClusterServingRuntime");
  const isvc = one("InferenceService");
  if (!runtime || !isvc) return;
  const info = checkRuntime(runtime, ctx, findings);
  if (!info) return;
  checkIsvc(isvc, runtime, info, findings);
  checkRest(docs, isvc, info, ctx, findings);
}

function loadCrds(dir) {
  for (const [file, want] of Object.entries(CRD_SHA256)) {
    const got = sha256(path.join(dir, file));
    if (got !== want) usage(`${file}: sha256 ${got}, third_party/kserve/README.md says ${want} (not the verbatim copy)`);
  }
  const ajv = makeAjv();
  const runtime = crdValidator(ajv, path.join(dir, "serving.kserve.io_clusterservingruntimes.yaml"));
  const isvc = crdValidator(ajv, path.join(dir, "serving.kserve.io_inferenceservices.yaml"),
    { forbid: ["canary", "explainer", "transformer"] });
  return { [runtime.kind]: runtime, [isvc.kind]: isvc };
}

async function selfTest(docs, ctx) {
  const base = [];
  await checkDocs(structuredClone(docs), ctx, base);
  if (base.length) {
    console.log(`self-test: the unmodified manifests already have findings:\n  ${base.join("\n  ")}`);
    return 1;
  }
  let missed = 0;
  for (const [name, mutate, pattern] of MUTATIONS) {
    const mutated = structuredClone(docs);
    mutate(mutated);
    const f = [];
    await checkDocs(mutated, ctx, f);
    const hit = f.some((x) => pattern.test(x));
    console.log(`self-test: ${hit ? "caught" : "MISSED"} ${name}${hit ? "" : `\n    findings: ${f.join(" | ") || "(none)"}`}`);
    if (!hit) ++missed;
  }
  console.log(`${MUTATIONS.length - missed} passed, ${missed} failed`);
  return missed === 0 ? 0 : 1;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const ctx = { crds: loadCrds(opts.crds), serverSrc: opts.serverSrc, adapter: opts.adapter };
  console.log(`check-kserve: CRD schemas compiled in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const docs = loadDocs(opts.dir);
  if (opts.selfTest) return selfTest(docs, ctx);
  const findings = [];
  await checkDocs(docs, ctx, findings);
  for (const f of findings) console.log(`FINDING ${f}`);
  console.log(`check-kserve: ${docs.length} documents (${docs.map((d) => d.kind).join(", ")}), ${findings.length} findings`);
  return findings.length === 0 ? 0 : 1;
}

main().then((rc) => { process.exitCode = rc; }, (e) => { console.error(e.stack ?? e); process.exitCode = 2; });
