#!/usr/bin/env node
// Offline check of reformer-serve's Kubernetes manifests (deploy/k8s).
//
//   node check-manifests.mjs [--dir deploy/k8s] [--adapter deploy/k8s/prometheus-adapter]
//                            [--alerts deploy/monitoring/alerts.yml] [--server-src server/] [--self-test]
//                            [--print-json]   (only render: the documents as one JSON array on stdout)
//
// 1. Renders the kustomization offline (resources, namespace, labels, images, and JSON 6902 patches: the features
//    deploy/k8s and its TLS overlay deploy/k8s-tls use).
//    When `kubectl` is on PATH it also runs `kubectl kustomize` and requires the same documents, which keeps the
//    built-in renderer honest; CI machines without kubectl still get the full check.
// 2. Validates every rendered document against its schema with kubernetes-models@4 (core/apps/autoscaling/
//    policy) and @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule CRD schemas): types,
//    required fields, enums, formats. (Like the API server's non-strict mode it does not flag unknown fields;
//    the policy checks below read every field they rely on, so a misspelt probe or limit is still caught.)
// 3. Policy: CPU requests = limits and workers x threads per worker = the CPU limit; native gRPC startup,
//    readiness and liveness probes on the container's gRPC port; preStop sleep + drain timeout <=
//    terminationGracePeriodSeconds; non-root, read-only root filesystem; a headless Service (gRPC round_robin) and
//    the Services selecting the pods;
//    HPA on the queue metric that the prometheus-adapter rule exports; PDB and ServiceMonitor selecting the right
//    objects; the PrometheusRule carries exactly deploy/monitoring/alerts.yml; REFORMER_* variables are real flags.
//    With TLS (REFORMER_TLS_CERT_FILE set, deploy/k8s-tls): probes over HTTP on the plaintext HTTP port instead
//    (native gRPC probes cannot speak TLS), the REST API not forced on beside TLS, every credential file
//    (TLS files, tokens) inside a read-only Secret volume mounted without subPath (a subPath mount never sees a
//    rotated Secret), and a NetworkPolicy selecting the pods must let clients reach the gRPC port.
// --self-test applies known-bad mutations to the rendered documents and requires each to be reported.
// Exit code 0 = all good, 1 = findings (printed one per line), 2 = usage or environment error.

import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");

function parseArgs(argv) {
  const opts = {
    dir: path.resolve(here, ".."),
    adapter: path.resolve(here, "../prometheus-adapter"),
    alerts: path.join(repoRoot, "deploy/monitoring/alerts.yml"),
    serverSrc: path.join(repoRoot, "server"),
    selfTest: false,
    kubectl: true,
  };
  for (let i = 2; i < argv.length; ++i) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return path.resolve(argv[++i]);
    };
    if (a === "--dir") opts.dir = next();
    else if (a === "--adapter") opts.adapter = next();
    else if (a === "--alerts") opts.alerts = next();
    else if (a === "--server-src") opts.serverSrc = next();
    else if (a === "--self-test") opts.selfTest = true;
    else if (a === "--no-kubectl") opts.kubectl = false;
    else if (a === "--print-json") opts.printJson = true;
    else usage(`unknown argument ${a}`);
  }
  return opts;
}

function usage(msg) {
  console.error(`check-manifests: ${msg}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------------------
// Offline kustomize renderer (subset). Unsupported keys are an error rather than silently ignored.

const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
  "PriorityClass", "StorageClass", "APIService", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]);

function splitImage(image) {
  // name[:tag][@digest]; a ':' before the last '/' belongs to a registry port.
  let name = image, tag = null, digest = null;
  const at = name.indexOf("@");
  if (at >= 0) { digest = name.slice(at + 1); name = name.slice(0, at); }
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) { tag = name.slice(colon + 1); name = name.slice(0, colon); }
  return { name, tag, digest };
}

function podSpecs(doc) {
  const out = [];
  if (doc?.spec?.template?.spec) out.push(doc.spec.template.spec);
  if (doc?.spec?.jobTemplate?.spec?.template?.spec) out.push(doc.spec.jobTemplate.spec.template.spec);
  if (doc?.kind === "Pod" && doc.spec) out.push(doc.spec);
  return out;
}

// JSON pointer (RFC 6901) → keys.
function pointerKeys(pointer) {
  if (!pointer.startsWith("/")) throw new Error(`JSON pointer '${pointer}' does not start with /`);
  return pointer.split("/").slice(1).map((k) => k.replace(/~1/g, "/").replace(/~0/g, "~"));
}

// RFC 6902 add / replace / remove on one document (what kustomize applies for an inline list patch).
function applyJson6902(doc, ops, where) {
  for (const op of ops) {
    const keys = pointerKeys(op.path ?? "");
    const last = keys.pop();
    let parent = doc;
    for (const k of keys) {
      parent = Array.isArray(parent) ? parent[Number(k)] : parent?.[k];
      if (parent === undefined) throw new Error(`${where}: ${op.op} ${op.path}: no such path`);
    }
    const index = Array.isArray(parent) ? (last === "-" ? parent.length : Number(last)) : last;
    const exists = Array.isArray(parent) ? index < parent.length : Object.hasOwn(parent, last);
    if (op.op === "add") {
      if (Array.isArray(parent)) parent.splice(index, 0, structuredClone(op.value));
      else parent[last] = structuredClone(op.value);
    } else if (op.op === "replace" || op.op === "remove") {
      if (!exists) throw new Error(`${where}: ${op.op} ${op.path}: no such path`);
      if (op.op === "replace") parent[index] = structuredClone(op.value);
      else if (Array.isArray(parent)) parent.splice(index, 1);
      else delete parent[last];
    } else {
      throw new Error(`${where}: JSON patch op '${op.op}' is not supported by the offline renderer`);
    }
  }
}

// A `patches` entry: a JSON 6902 list (inline `patch` or a file `path`) applied to the documents its target
// (kind, name, group, version, namespace) selects. Strategic-merge patches are not supported offline.
function applyPatch(dir, kfile, entry, docs) {
  const text = entry.patch ?? (entry.path ? fs.readFileSync(path.resolve(dir, entry.path), "utf8") : undefined);
  const ops = text === undefined ? undefined : yaml.load(text);
  if (!Array.isArray(ops)) throw new Error(`${kfile}: only JSON 6902 patches (a list of operations) are supported offline`);
  const t = entry.target ?? {};
  for (const key of Object.keys(t)) {
    if (!["kind", "name", "group", "version", "namespace"].includes(key)) {
      throw new Error(`${kfile}: patch target.${key} is not supported by the offline renderer`);
    }
  }
  const selected = docs.filter((d) => {
    const [group, version] = d.apiVersion?.includes("/") ? d.apiVersion.split("/") : ["", d.apiVersion];
    return (t.kind === undefined || t.kind === d.kind) && (t.name === undefined || t.name === d.metadata?.name) &&
      (t.group === undefined || t.group === group) && (t.version === undefined || t.version === version) &&
      (t.namespace === undefined || t.namespace === d.metadata?.namespace);
  });
  if (selected.length === 0) throw new Error(`${kfile}: patch target ${JSON.stringify(t)} selects no document`);
  for (const d of selected) applyJson6902(d, ops, `${kfile} patch of ${d.kind}/${d.metadata?.name}`);
}

export function renderKustomization(dir) {
  const kfile = ["kustomization.yaml", "kustomization.yml", "Kustomization"].map((f) => path.join(dir, f))
    .find((f) => fs.existsSync(f));
  if (!kfile) throw new Error(`${dir}: no kustomization.yaml`);
  const k = yaml.load(fs.readFileSync(kfile, "utf8"));
  const supported = new Set(["apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"]);
  for (const key of Object.keys(k)) {
    if (!supported.has(key)) throw new Error(`${kfile}: key '${key}' is not supported by the offline renderer`);
  }
  let docs = [];
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) docs.push(...renderKustomization(p));
    else docs.push(...yaml.loadAll(fs.readFileSync(p, "utf8")).filter((d) => d != null));
  }
  for (const patch of k.patches ?? []) applyPatch(dir, kfile, patch, docs);
  for (const l of k.labels ?? []) {
    if (l.includeSelectors) throw new Error(`${kfile}: labels.includeSelectors is not supported offline`);
    for (const d of docs) {
      d.metadata ??= {};
      d.metadata.labels = { ...(d.metadata.labels ?? {}), ...l.pairs };
      if (l.includeTemplates && d.spec?.template) {
        d.spec.template.metadata ??= {};
        d.spec.template.metadata.labels = { ...(d.spec.template.metadata.labels ?? {}), ...l.pairs };
      }
    }
  }
  if (k.namespace) {
    for (const d of docs) if (!CLUSTER_SCOPED.has(d.kind)) { d.metadata ??= {}; d.metadata.namespace = k.namespace; }
  }
  for (const img of k.images ?? []) {
    for (const d of docs) {
      for (const ps of podSpecs(d)) {
        for (const c of [...(ps.containers ?? []), ...(ps.initContainers ?? [])]) {
          const cur = splitImage(c.image);
          if (cur.name !== img.name) continue;
          let image = img.newName ?? cur.name;
          if (img.digest) image += `@${img.digest}`;
          else if (img.newTag) image += `:${img.newTag}`;
          else if (cur.tag) image += `:${cur.tag}`;
          c.image = image;
        }
      }
    }
  }
  return docs;
}

function docKey(d) {
  return `${d.apiVersion}/${d.kind}/${d.metadata?.namespace ?? ""}/${d.metadata?.name}`;
}

function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).sort().map((key) => [key, canonical(v[key])]));
  }
  return v;
}

function kubectlAvailable() {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function compareWithKubectl(dir, docs, findings) {
  const out = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
  const theirs = new Map(yaml.loadAll(out).filter((d) => d != null).map((d) => [docKey(d), d]));
  const ours = new Map(docs.map((d) => [docKey(d), d]));
  for (const key of new Set([...theirs.keys(), ...ours.keys()])) {
    if (!theirs.has(key)) findings.push(`render: ${key} rendered offline but not by kubectl kustomize`);
    else if (!ours.has(key)) findings.push(`render: ${key} rendered by kubectl kustomize but not offline`);
    else if (JSON.stringify(canonical(theirs.get(key))) !== JSON.stringify(canonical(ours.get(key)))) {
      findings.push(`render: ${key} differs between the offline renderer and kubectl kustomize`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Schema validation with kubernetes-models.

function modelModule(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

async function validateSchema(doc, findings) {
  const where = `${doc.kind}/${doc.metadata?.name}`;
  if (!doc.apiVersion || !doc.kind) {
    findings.push(`schema: a document without apiVersion/kind: ${JSON.stringify(doc).slice(0, 80)}`);
    return;
  }
  let mod;
  try {
    mod = await import(modelModule(doc.apiVersion, doc.kind));
  } catch {
    findings.push(`schema: ${where}: no schema for ${doc.apiVersion} ${doc.kind}`);
    return;
  }
  const Cls = mod[doc.kind] ?? mod.default;
  try {
    new Cls(structuredClone(doc)).validate();
  } catch (e) {
    const detail = (e.errors ?? []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ") || e.message;
    findings.push(`schema: ${where}: ${detail}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Policy checks.

// Kubernetes quantities → number (CPU in cores, memory in bytes).
export function parseQuantity(q) {
  if (typeof q === "number") return q;
  const m = /^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q));
  if (!m) return NaN;
  const mult = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

function matches(selector, labels) {
  if (!selector || !labels) return false;
  const ml = selector.matchLabels ?? selector;
  if (Object.keys(ml).length === 0) return false;
  return Object.entries(ml).every(([k, v]) => labels[k] === v);
}

function envValue(container, name) {
  const e = (container.env ?? []).find((x) => x.name === name);
  return e?.value;
}

function resolvePort(container, port) {
  if (typeof port === "number") return port;
  return (container.ports ?? []).find((p) => p.name === port)?.containerPort;
}

// Names of the server's flags, from its sources: the one list in server/config/server_config.cc declares each
// as `flags->Add("name", &field, ...)`. Empty when absent.
function serverFlags(serverSrc) {
  const flags = new Set();
  if (!fs.existsSync(serverSrc)) return flags;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h)$/.test(e.name)) {
        for (const m of fs.readFileSync(p, "utf8").matchAll(/\bAdd\(\s*"([a-z0-9_]+)"\s*,/g)) {
          flags.add(m[1]);
        }
      }
    }
  };
  walk(serverSrc);
  return flags;
}

function checkDeployment(dep, ctx, findings) {
  const where = `Deployment/${dep.metadata?.name}`;
  const spec = dep.spec ?? {};
  const pod = spec.template?.spec ?? {};
  const podLabels = spec.template?.metadata?.labels ?? {};
  if (!matches(spec.selector, podLabels)) findings.push(`${where}: spec.selector does not match the pod labels`);
  const containers = pod.containers ?? [];
  const server = containers.find((c) => (c.ports ?? []).some((p) => p.name === "grpc")) ?? containers[0];
  if (!server) {
    findings.push(`${where}: no containers`);
    return;
  }
  const cname = `${where} container ${server.name}`;

  // Resources: Guaranteed QoS and threads = CPU limit.
  const req = server.resources?.requests ?? {};
  const lim = server.resources?.limits ?? {};
  for (const r of ["cpu", "memory"]) {
    if (lim[r] === undefined) findings.push(`${cname}: resources.limits.${r} missing`);
    else if (parseQuantity(req[r]) !== parseQuantity(lim[r])) {
      findings.push(`${cname}: resources.requests.${r} (${req[r]}) != limits.${r} (${lim[r]})`);
    }
  }
  const cpu = parseQuantity(lim.cpu);
  if (!(cpu >= 1 && Number.isInteger(cpu))) findings.push(`${cname}: CPU limit ${lim.cpu} is not a whole number of CPUs`);
  const workers = Number(envValue(server, "REFORMER_WORKERS"));
  const threads = Number(envValue(server, "REFORMER_THREADS_PER_WORKER"));
  if (!(workers >= 1) || !(threads >= 1)) {
    findings.push(`${cname}: REFORMER_WORKERS and REFORMER_THREADS_PER_WORKER must be set to positive integers`);
  } else if (workers * threads !== cpu) {
    findings.push(`${cname}: REFORMER_WORKERS x REFORMER_THREADS_PER_WORKER = ${workers} x ${threads} = ` +
      `${workers * threads} != CPU limit ${cpu}`);
  }
  const omp = envValue(server, "OMP_NUM_THREADS");
  if (omp !== undefined && Number(omp) !== threads) {
    findings.push(`${cname}: OMP_NUM_THREADS=${omp} != REFORMER_THREADS_PER_WORKER=${threads}`);
  }

  // Ports agree with the env the server reads.
  const grpcPort = resolvePort(server, "grpc");
  const httpPort = resolvePort(server, "http");
  if (grpcPort === undefined || httpPort === undefined) findings.push(`${cname}: ports named grpc and http required`);
  if (envValue(server, "REFORMER_GRPC_PORT") !== undefined && Number(envValue(server, "REFORMER_GRPC_PORT")) !== grpcPort) {
    findings.push(`${cname}: REFORMER_GRPC_PORT != containerPort grpc (${grpcPort})`);
  }
  if (envValue(server, "REFORMER_HTTP_PORT") !== undefined && Number(envValue(server, "REFORMER_HTTP_PORT")) !== httpPort) {
    findings.push(`${cname}: REFORMER_HTTP_PORT != containerPort http (${httpPort})`);
  }

  // Every REFORMER_* variable must be a real flag (REFORMER_FOO_BAR <-> --foo_bar). No flags found means this
  // check cannot work: a finding, never a silent pass.
  if (ctx.flags.size === 0) {
    findings.push(`${cname}: no server flag declarations found under ${ctx.serverSrc} (flags->Add("name", ...))`);
  }
  for (const e of server.env ?? []) {
    if (!e.name.startsWith("REFORMER_")) continue;
    const flag = e.name.slice("REFORMER_".length).toLowerCase();
    if (ctx.flags.size > 0 && !ctx.flags.has(flag)) findings.push(`${cname}: env ${e.name} matches no server flag --${flag}`);
  }

  const tls = (envValue(server, "REFORMER_TLS_CERT_FILE") ?? "") !== "";
  if (tls) checkTlsProbes(server, httpPort, cname, findings);
  else checkGrpcProbes(server, grpcPort, cname, findings);
  checkCredentialMounts(server, pod, cname, findings);
  const sp = server.startupProbe;
  if (sp && (sp.periodSeconds ?? 10) * (sp.failureThreshold ?? 3) < 60) {
    findings.push(`${cname}: startupProbe allows less than 60 s for model loading`);
  }

  // Termination: preStop sleep, then SIGTERM and a drain that must fit in the grace period.
  const preStop = server.lifecycle?.preStop;
  let preStopSeconds = NaN;
  if (preStop?.sleep) preStopSeconds = Number(preStop.sleep.seconds);
  else if (preStop?.exec?.command) {
    const cmd = preStop.exec.command;
    if (/(^|\/)sleep$/.test(cmd[0] ?? "") && cmd.length === 2) preStopSeconds = Number(cmd[1]);
  }
  if (!(preStopSeconds > 0)) findings.push(`${cname}: lifecycle.preStop must be a sleep of a few seconds`);
  const drain = Number(envValue(server, "REFORMER_DRAIN_TIMEOUT_S"));
  if (!(drain > 0)) findings.push(`${cname}: REFORMER_DRAIN_TIMEOUT_S must be set`);
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  if (preStopSeconds > 0 && drain > 0 && grace < preStopSeconds + drain) {
    findings.push(`${where}: terminationGracePeriodSeconds ${grace} < preStop ${preStopSeconds} s + drain ${drain} s`);
  }

  // Security.
  const psc = pod.securityContext ?? {};
  const csc = server.securityContext ?? {};
  const runAsNonRoot = csc.runAsNonRoot ?? psc.runAsNonRoot;
  const runAsUser = csc.runAsUser ?? psc.runAsUser;
  if (runAsNonRoot !== true) findings.push(`${cname}: runAsNonRoot must be true`);
  if (runAsUser === 0) findings.push(`${cname}: runAsUser 0`);
  if (csc.readOnlyRootFilesystem !== true) findings.push(`${cname}: readOnlyRootFilesystem must be true`);
  if (csc.allowPrivilegeEscalation !== false) findings.push(`${cname}: allowPrivilegeEscalation must be false`);
  if (csc.privileged === true) findings.push(`${cname}: privileged`);
  if (!(csc.capabilities?.drop ?? []).includes("ALL")) findings.push(`${cname}: capabilities must drop ALL`);
  for (const m of server.volumeMounts ?? []) {
    if (!(pod.volumes ?? []).some((v) => v.name === m.name)) findings.push(`${cname}: volumeMount ${m.name} has no volume`);
  }
  return { podLabels, server, grpcPort, httpPort };
}

// Native gRPC probes on the plaintext gRPC port.
function checkGrpcProbes(server, grpcPort, cname, findings) {
  const wantService = { startupProbe: "readiness", readinessProbe: "readiness", livenessProbe: "liveness" };
  for (const [probe, svc] of Object.entries(wantService)) {
    const p = server[probe];
    if (!p) {
      findings.push(`${cname}: ${probe} missing`);
      continue;
    }
    if (!p.grpc) {
      findings.push(`${cname}: ${probe} is not a native gRPC probe`);
      continue;
    }
    if (p.grpc.port !== grpcPort) findings.push(`${cname}: ${probe}.grpc.port ${p.grpc.port} != gRPC port ${grpcPort}`);
    if ((p.grpc.service ?? "") !== svc) {
      findings.push(`${cname}: ${probe}.grpc.service '${p.grpc.service ?? ""}' != '${svc}'`);
    }
  }
}

// With TLS on the gRPC port: HTTP probes on the plaintext HTTP port (kubelet's gRPC probes cannot do TLS), and
// the REST API not forced on in plaintext beside it.
function checkTlsProbes(server, httpPort, cname, findings) {
  const wantPath = { startupProbe: "/readyz", readinessProbe: "/readyz", livenessProbe: "/healthz" };
  for (const [probe, want] of Object.entries(wantPath)) {
    const p = server[probe];
    if (!p) {
      findings.push(`${cname}: ${probe} missing`);
      continue;
    }
    if (p.grpc) {
      findings.push(`${cname}: ${probe} is a native gRPC probe but the gRPC port accepts TLS only (kubelet's gRPC ` +
        `probes cannot speak TLS): probe ${want} on the plaintext HTTP port`);
      continue;
    }
    if (!p.httpGet) {
      findings.push(`${cname}: ${probe} must be an httpGet of ${want} on the HTTP port`);
      continue;
    }
    if (resolvePort(server, p.httpGet.port) !== httpPort) {
      findings.push(`${cname}: ${probe}.httpGet.port ${p.httpGet.port} is not the HTTP port ${httpPort}`);
    }
    if ((p.httpGet.scheme ?? "HTTP") !== "HTTP") {
      findings.push(`${cname}: ${probe}.httpGet.scheme ${p.httpGet.scheme}: the HTTP port is plaintext`);
    }
    if (p.httpGet.path !== want) findings.push(`${cname}: ${probe}.httpGet.path ${p.httpGet.path} != ${want}`);
  }
  if (envValue(server, "REFORMER_HTTP_API") === "on") {
    findings.push(`${cname}: REFORMER_HTTP_API=on serves the REST API on the plaintext HTTP port beside a TLS gRPC ` +
      "port (requests and tokens in the clear); leave it auto");
  }
}

// Every credential file the server re-reads lies in a read-only Secret volume mounted as a directory: kubelet
// updates such a volume when the Secret changes, never a subPath mount.
function checkCredentialMounts(server, pod, cname, findings) {
  const names = ["REFORMER_TLS_CERT_FILE", "REFORMER_TLS_KEY_FILE", "REFORMER_TLS_CLIENT_CA_FILE", "REFORMER_AUTH_TOKENS_FILE"];
  for (const name of names) {
    const file = envValue(server, name);
    if (!file) continue;
    const mounts = (server.volumeMounts ?? []).filter((m) => file.startsWith(m.mountPath.replace(/\/*$/, "/")) ||
      (m.subPath && file === m.mountPath));
    const mount = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    if (!mount) {
      findings.push(`${cname}: ${name} ${file} is not under any volumeMount`);
      continue;
    }
    if (mount.subPath) {
      findings.push(`${cname}: ${name} ${file} is mounted with subPath: Kubernetes never updates a subPath mount, so ` +
        "a rotated Secret would not reach the server");
    }
    if (mount.readOnly !== true) findings.push(`${cname}: volumeMount ${mount.name} (${name}) must be readOnly`);
    const volume = (pod.volumes ?? []).find((v) => v.name === mount.name);
    const secret = volume?.secret ?? null;
    if (!secret && !volume?.projected) {
      findings.push(`${cname}: ${name} ${file} is not in a Secret volume (volume ${mount.name})`);
      continue;
    }
    const key = file.slice(mount.mountPath.replace(/\/*$/, "/").length);
    if (secret?.items && !secret.items.some((i) => i.path === key)) {
      findings.push(`${cname}: ${name}: ${key} is not among the items of Secret ${secret.secretName}`);
    }
  }
}

function checkNetworkPolicies(docs, info, findings) {
  for (const np of docs.filter((d) => d.kind === "NetworkPolicy")) {
    const where = `NetworkPolicy/${np.metadata?.name}`;
    if (!matches(np.spec?.podSelector, info.podLabels)) {
      findings.push(`${where}: podSelector does not select the server's pods`);
      continue;
    }
    const types = np.spec?.policyTypes ?? ["Ingress"];
    if (!types.includes("Ingress")) continue;
    const rules = np.spec?.ingress ?? [];
    for (const r of rules) {
      for (const p of r.ports ?? []) {
        if (resolvePort(info.server, p.port) === undefined) {
          findings.push(`${where}: ingress port ${p.port} is not a port of the server container`);
        }
      }
    }
    const grpcOpen = rules.some((r) => (r.from ?? []).length === 0 &&
      ((r.ports ?? []).length === 0 || r.ports.some((p) => resolvePort(info.server, p.port) === info.grpcPort)));
    if (!grpcOpen) findings.push(`${where}: blocks the gRPC port (${info.grpcPort}) for clients`);
  }
}


function checkAdapter(adapterDir, hpaMetrics, findings) {
  if (!fs.existsSync(adapterDir)) {
    findings.push(`adapter: ${adapterDir} missing`);
    return [];
  }
  const docs = renderKustomization(adapterDir);
  const cms = docs.filter((d) => d.kind === "ConfigMap");
  const rules = [];
  for (const cm of cms) {
    for (const [key, text] of Object.entries(cm.data ?? {})) {
      let cfg;
      try {
        cfg = yaml.load(text);
      } catch (e) {
        findings.push(`adapter: ConfigMap/${cm.metadata?.name} ${key}: invalid YAML: ${e.message}`);
        continue;
      }
      for (const r of cfg?.rules ?? []) rules.push({ ...r, source: `ConfigMap/${cm.metadata?.name} ${key}` });
    }
  }
  if (rules.length === 0) findings.push("adapter: no prometheus-adapter rules found");
  for (const r of rules) {
    for (const field of ["seriesQuery", "metricsQuery"]) {
      if (typeof r[field] !== "string" || r[field].length === 0) findings.push(`adapter: ${r.source}: ${field} missing`);
    }
    const ov = r.resources?.overrides ?? {};
    if (ov.namespace?.resource !== "namespace" || ov.pod?.resource !== "pod") {
      findings.push(`adapter: ${r.source}: resources.overrides must map the namespace and pod labels`);
    }
    if (!/<<\.Series>>/.test(r.metricsQuery ?? "") || !/<<\.LabelMatchers>>/.test(r.metricsQuery ?? "") ||
        !/<<\.GroupBy>>/.test(r.metricsQuery ?? "")) {
      findings.push(`adapter: ${r.source}: metricsQuery must use <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>>`);
    }
  }
  // Name each rule exports: name.as, or the series name when no rename.
  const exported = new Set(rules.map((r) => r.name?.as ?? /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(r.seriesQuery ?? "")?.[1]));
  for (const m of hpaMetrics) {
    if (!exported.has(m)) findings.push(`adapter: the HPA metric ${m} is exported by no prometheus-adapter rule`);
  }
  return rules;
}

export async function checkDocs(docs, opts, findings) {
  for (const d of docs) await validateSchema(d, findings);

  const byKind = (k) => docs.filter((d) => d.kind === k);
  const deployments = byKind("Deployment");
  if (deployments.length !== 1) {
    findings.push(`expected exactly one Deployment, found ${deployments.length}`);
    return;
  }
  const dep = deployments[0];
  const info = checkDeployment(dep, { flags: serverFlags(opts.serverSrc), serverSrc: opts.serverSrc }, findings);
  if (!info) return;
  checkNetworkPolicies(docs, info, findings);

  const services = byKind("Service");
  const headless = services.filter((s) => s.spec?.clusterIP === "None");
  if (headless.length === 0) findings.push("Service: no headless Service (clusterIP: None) for client-side gRPC balancing");
  for (const s of services) {
    const where = `Service/${s.metadata?.name}`;
    if (!matches(s.spec?.selector, info.podLabels)) findings.push(`${where}: selector does not match the pod labels`);
    for (const p of s.spec?.ports ?? []) {
      const target = p.targetPort ?? p.port;
      if (resolvePort(info.server, target) === undefined) {
        findings.push(`${where}: port ${p.name} targets ${target}, which the container does not expose`);
      }
    }
    if (!(s.spec?.ports ?? []).some((p) => p.name === "grpc")) findings.push(`${where}: no port named grpc`);
  }

  const hpas = byKind("HorizontalPodAutoscaler");
  if (hpas.length !== 1) findings.push(`expected one HorizontalPodAutoscaler, found ${hpas.length}`);
  const hpaMetrics = [];
  for (const h of hpas) {
    const where = `HorizontalPodAutoscaler/${h.metadata?.name}`;
    const ref = h.spec?.scaleTargetRef ?? {};
    if (ref.kind !== "Deployment" || ref.name !== dep.metadata?.name || ref.apiVersion !== "apps/v1") {
      findings.push(`${where}: scaleTargetRef does not name Deployment ${dep.metadata?.name}`);
    }
    if (!((h.spec?.minReplicas ?? 1) >= 2)) findings.push(`${where}: minReplicas < 2 leaves no replica during a rollout`);
    if (!(h.spec?.maxReplicas >= (h.spec?.minReplicas ?? 1))) findings.push(`${where}: maxReplicas < minReplicas`);
    const pods = (h.spec?.metrics ?? []).filter((m) => m.type === "Pods");
    if (pods.length === 0) findings.push(`${where}: no Pods metric (scale on the queue gauge, not CPU)`);
    for (const m of pods) {
      const name = m.pods?.metric?.name ?? "";
      if (!/queue/.test(name)) findings.push(`${where}: Pods metric ${name} is not a queue metric`);
      if (/_total$/.test(name)) findings.push(`${where}: Pods metric ${name} is a raw counter`);
      hpaMetrics.push(name);
    }
  }
  checkAdapter(opts.adapter, hpaMetrics, findings);
  if (fs.existsSync(opts.adapter)) for (const d of renderKustomization(opts.adapter)) await validateSchema(d, findings);

  const pdbs = byKind("PodDisruptionBudget");
  if (pdbs.length !== 1) findings.push(`expected one PodDisruptionBudget, found ${pdbs.length}`);
  for (const p of pdbs) {
    if (!matches(p.spec?.selector, info.podLabels)) {
      findings.push(`PodDisruptionBudget/${p.metadata?.name}: selector does not match the pod labels`);
    }
    const replicas = dep.spec?.replicas ?? 1;
    if (p.spec?.minAvailable !== undefined && parseQuantity(p.spec.minAvailable) >= replicas) {
      findings.push(`PodDisruptionBudget/${p.metadata?.name}: minAvailable >= replicas blocks every drain`);
    }
  }

  const sms = byKind("ServiceMonitor");
  if (sms.length !== 1) findings.push(`expected one ServiceMonitor, found ${sms.length}`);
  for (const sm of sms) {
    const where = `ServiceMonitor/${sm.metadata?.name}`;
    const selected = services.filter((s) => matches(sm.spec?.selector, s.metadata?.labels));
    if (selected.length === 0) {
      findings.push(`${where}: selector matches no Service`);
      continue;
    }
    for (const ep of sm.spec?.endpoints ?? []) {
      // Exactly one selected Service may carry the port: two would scrape every pod twice.
      const withPort = selected.filter((s) => (s.spec?.ports ?? []).some((p) => p.name === ep.port));
      const sp = withPort[0]?.spec.ports.find((p) => p.name === ep.port);
      if (withPort.length !== 1) {
        findings.push(`${where}: endpoint port ${ep.port} is on ${withPort.length} selected Services (want 1: ` +
          `${selected.map((s) => s.metadata?.name).join(", ")})`);
      } else if (resolvePort(info.server, sp.targetPort ?? sp.port) !== info.httpPort) {
        findings.push(`${where}: endpoint port ${ep.port} is not the HTTP (metrics) port`);
      }
      if ((ep.path ?? "/metrics") !== "/metrics") findings.push(`${where}: endpoint path ${ep.path} != /metrics`);
    }
    if ((sm.spec?.endpoints ?? []).length === 0) findings.push(`${where}: no endpoints`);
  }

  const prs = byKind("PrometheusRule");
  if (fs.existsSync(opts.alerts)) {
    const want = yaml.load(fs.readFileSync(opts.alerts, "utf8"))?.groups;
    if (prs.length !== 1) findings.push(`expected one PrometheusRule, found ${prs.length}`);
    for (const pr of prs) {
      if (JSON.stringify(canonical(pr.spec?.groups)) !== JSON.stringify(canonical(want))) {
        findings.push(`PrometheusRule/${pr.metadata?.name}: spec.groups differ from ${path.relative(repoRoot, opts.alerts)}` +
          " (regenerate it with deploy/monitoring/sync-prometheusrule.sh)");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Self test: every mutation must be reported.

function server(docs) {
  return docs.find((d) => d.kind === "Deployment").spec.template.spec.containers[0];
}
function setEnv(docs, name, value) {
  const c = server(docs);
  c.env = (c.env ?? []).filter((e) => e.name !== name);
  if (value !== undefined) c.env.push({ name, value });
}
const MUTATIONS = [
  ["threads x workers != CPU limit", (d) => setEnv(d, "REFORMER_WORKERS", "3"), /!= CPU limit/],
  ["CPU request below the limit", (d) => { server(d).resources.requests.cpu = "1500m"; }, /requests\.cpu .* != limits\.cpu/],
  ["fractional CPU limit", (d) => { server(d).resources.limits.cpu = "1500m"; server(d).resources.requests.cpu = "1500m"; },
    /not a whole number of CPUs/],
  ["HTTP readiness probe", (d) => { server(d).readinessProbe = { httpGet: { path: "/readyz", port: 8000 } }; },
    /readinessProbe is not a native gRPC probe/, "plain"],
  ["liveness probe on the wrong port", (d) => { server(d).livenessProbe.grpc.port = 8000; }, /livenessProbe\.grpc\.port/,
    "plain"],
  ["no startup probe", (d) => { delete server(d).startupProbe; }, /startupProbe missing/],
  ["grace period shorter than preStop + drain",
    (d) => { d.find((x) => x.kind === "Deployment").spec.template.spec.terminationGracePeriodSeconds = 20; },
    /terminationGracePeriodSeconds 20 </],
  ["root user", (d) => { d.find((x) => x.kind === "Deployment").spec.template.spec.securityContext.runAsNonRoot = false; },
    /runAsNonRoot/],
  ["writable root filesystem", (d) => { server(d).securityContext.readOnlyRootFilesystem = false; }, /readOnlyRootFilesystem/],
  ["string where an integer belongs (schema)", (d) => { server(d).ports[0].containerPort = "8001"; },
    /schema: Deployment.*containerPort/],
  ["bad enum (schema)", (d) => { server(d).ports[0].protocol = "TCPX"; }, /schema: Deployment.*protocol/],
  ["Service not headless", (d) => { d.find((x) => x.kind === "Service" && x.spec.clusterIP === "None").spec.clusterIP = ""; },
    /no headless Service/],
  ["headless Service also exposes http (pods scraped twice)", (d) => {
    const h = d.find((x) => x.kind === "Service" && x.spec.clusterIP === "None");
    h.spec.ports.push({ name: "http", port: 8000, targetPort: "http", protocol: "TCP" });
  }, /endpoint port http is on 2 selected Services/],
  ["Service selector typo", (d) => { d.find((x) => x.kind === "Service").spec.selector["app.kubernetes.io/name"] = "reformer"; },
    /Service\/.*selector does not match/],
  ["HPA on CPU only", (d) => {
    d.find((x) => x.kind === "HorizontalPodAutoscaler").spec.metrics =
      [{ type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 80 } } }];
  }, /no Pods metric/],
  ["HPA metric the adapter does not export", (d) => {
    d.find((x) => x.kind === "HorizontalPodAutoscaler").spec.metrics[0].pods.metric.name = "reformer_queue_requests";
  }, /exported by no prometheus-adapter rule/],
  ["HPA targets another Deployment", (d) => { d.find((x) => x.kind === "HorizontalPodAutoscaler").spec.scaleTargetRef.name = "x"; },
    /scaleTargetRef/],
  ["PDB selects nothing", (d) => { d.find((x) => x.kind === "PodDisruptionBudget").spec.selector.matchLabels = { app: "x" }; },
    /PodDisruptionBudget.*selector/],
  ["ServiceMonitor on an unknown port", (d) => { d.find((x) => x.kind === "ServiceMonitor").spec.endpoints[0].port = "metrics"; },
    /endpoint port metrics/],
  ["ServiceMonitor field of the wrong type (CRD schema)",
    (d) => { d.find((x) => x.kind === "ServiceMonitor").spec.endpoints[0].honorLabels = "yes"; }, /schema: ServiceMonitor/],
  ["PrometheusRule out of sync with alerts.yml", (d) => {
    const pr = d.find((x) => x.kind === "PrometheusRule");
    pr.spec.groups[0].rules[0].expr = "vector(1)";
  }, /PrometheusRule.*differ/],
  ["misspelt env var", (d) => setEnv(d, "REFORMER_DRAIN_TIMEOUT_SECONDS", "30"), /matches no server flag|REFORMER_DRAIN_TIMEOUT_SECONDS/],
  // TLS variant (deploy/k8s-tls).
  ["native gRPC probe on the TLS-only gRPC port", (d) => {
    server(d).readinessProbe = { grpc: { port: 8001, service: "readiness" }, periodSeconds: 5 };
  }, /readinessProbe is a native gRPC probe but the gRPC port accepts TLS only/, "tls"],
  ["HTTPS probe on the plaintext HTTP port", (d) => { server(d).livenessProbe.httpGet.scheme = "HTTPS"; },
    /livenessProbe\.httpGet\.scheme HTTPS/, "tls"],
  ["liveness probe on /readyz", (d) => { server(d).livenessProbe.httpGet.path = "/readyz"; },
    /livenessProbe\.httpGet\.path \/readyz != \/healthz/, "tls"],
  ["REST API forced on in plaintext", (d) => setEnv(d, "REFORMER_HTTP_API", "on"), /REFORMER_HTTP_API=on/, "tls"],
  ["certificate mounted with subPath", (d) => {
    const c = server(d);
    c.volumeMounts = c.volumeMounts.filter((m) => m.name !== "tls");
    c.volumeMounts.push({ name: "tls", mountPath: "/etc/reformer-serve/tls/tls.crt", subPath: "tls.crt", readOnly: true },
      { name: "tls", mountPath: "/etc/reformer-serve/tls/tls.key", subPath: "tls.key", readOnly: true },
      { name: "tls", mountPath: "/etc/reformer-serve/tls/ca.crt", subPath: "ca.crt", readOnly: true });
  }, /REFORMER_TLS_CERT_FILE .* is mounted with subPath/, "tls"],
  ["tokens file outside every mount", (d) => setEnv(d, "REFORMER_AUTH_TOKENS_FILE", "/etc/tokens"),
    /REFORMER_AUTH_TOKENS_FILE \/etc\/tokens is not under any volumeMount/, "tls"],
  ["writable credential mount", (d) => { server(d).volumeMounts.find((m) => m.name === "tls").readOnly = false; },
    /volumeMount tls .* must be readOnly/, "tls"],
  ["certificates in an emptyDir", (d) => {
    const v = d.find((x) => x.kind === "Deployment").spec.template.spec.volumes.find((x) => x.name === "tls");
    delete v.secret;
    v.emptyDir = {};
  }, /REFORMER_TLS_KEY_FILE .* is not in a Secret volume/, "tls"],
  ["Secret items without the key", (d) => {
    const v = d.find((x) => x.kind === "Deployment").spec.template.spec.volumes.find((x) => x.name === "tls");
    v.secret.items = [{ key: "tls.crt", path: "tls.crt" }, { key: "ca.crt", path: "ca.crt" }];
  }, /REFORMER_TLS_KEY_FILE: tls\.key is not among the items/, "tls"],
  ["NetworkPolicy closing the gRPC port", (d) => {
    d.find((x) => x.kind === "NetworkPolicy").spec.ingress[0].from = [{ podSelector: { matchLabels: { app: "x" } } }];
  }, /NetworkPolicy\/reformer-serve: blocks the gRPC port/, "tls"],
];

async function selfTest(docs, opts) {
  let failed = 0;
  const base = [];
  await checkDocs(structuredClone(docs), opts, base);
  if (base.length > 0) {
    console.log("self-test: the unmodified manifests already have findings:\n  " + base.join("\n  "));
    return 1;
  }
  const variant = (server(docs).env ?? []).some((e) => e.name === "REFORMER_TLS_CERT_FILE" && e.value) ? "tls" : "plain";
  const mutations = MUTATIONS.filter(([, , , only]) => only === undefined || only === variant);
  for (const [name, mutate, pattern] of mutations) {
    const mutated = structuredClone(docs);
    mutate(mutated);
    const f = [];
    await checkDocs(mutated, opts, f);
    const hit = f.some((x) => pattern.test(x));
    console.log(`self-test: ${hit ? "caught" : "MISSED"} ${name}${hit ? "" : `\n    findings: ${f.join(" | ") || "(none)"}`}`);
    if (!hit) ++failed;
  }
  console.log(`self-test (${variant}): ${mutations.length - failed} of ${mutations.length} mutations caught, ` +
    `${failed} missed`);
  return failed === 0 ? 0 : 1;
}

async function main() {
  const opts = parseArgs(process.argv);
  let docs;
  try {
    docs = renderKustomization(opts.dir);
  } catch (e) {
    console.error(`check-manifests: ${e.message}`);
    process.exit(2);
  }
  if (opts.selfTest) process.exit(await selfTest(docs, opts));
  if (opts.printJson) {  // the rendered documents, for tests that run the server as the manifests configure it
    console.log(JSON.stringify(docs));
    return;
  }

  const findings = [];
  if (opts.kubectl && kubectlAvailable()) {
    compareWithKubectl(opts.dir, docs, findings);
    if (fs.existsSync(opts.adapter)) compareWithKubectl(opts.adapter, renderKustomization(opts.adapter), findings);
    console.log("check-manifests: offline rendering compared with `kubectl kustomize`");
  } else {
    console.log("check-manifests: kubectl not available; offline rendering only");
  }
  await checkDocs(docs, opts, findings);
  const kinds = docs.map((d) => `${d.kind}/${d.metadata?.name}`).join(", ");
  if (findings.length > 0) {
    for (const f of findings) console.log(`FAIL ${f}`);
    console.log(`check-manifests: ${findings.length} finding(s) in ${docs.length} documents`);
    process.exit(1);
  }
  console.log(`check-manifests: OK, ${docs.length} documents (${kinds})`);
}

main();
