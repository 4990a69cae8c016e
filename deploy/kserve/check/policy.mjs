// Policy checks of deploy/kserve: what KServe's conventions and this server need beyond the CRD schemas.
// Each finding names the object and the rule. Sources for the KServe conventions: the comments in
// deploy/kserve/*.yaml and deploy/README.md ("KServe").
import fs from "node:fs";
import path from "node:path";
import yaml from "js-yaml";

export function parseQuantity(q) {
  if (typeof q === "number") return q;
  const m = /^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q));
  if (!m) return NaN;
  const mult = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

// Server flag names from the sources: ABSL_FLAG(type, name, ...) or the config list's Add("name", ...).
export function serverFlags(dir) {
  const flags = new Set();
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h)$/.test(e.name)) {
        const text = fs.readFileSync(p, "utf8");
        for (const m of text.matchAll(/ABSL_FLAG\(\s*[^,]+,\s*([a-z0-9_]+)\s*,/g)) flags.add(m[1]);
        for (const m of text.matchAll(/\bAdd\(\s*"([a-z0-9_]+)"\s*,/g)) flags.add(m[1]);
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return flags;
}

const env = (c, name) => (c.env ?? []).find((e) => e.name === name)?.value;

function checkEnv(c, ctx, where, findings) {
  const flags = serverFlags(ctx.serverSrc);
  if (flags.size === 0) findings.push(`${where}: no server flag declarations found under ${ctx.serverSrc}`);
  for (const e of c.env ?? []) {
    if (!e.name.startsWith("REFORMER_") || flags.size === 0) continue;
    const flag = e.name.slice("REFORMER_".length).toLowerCase();
    if (!flags.has(flag)) findings.push(`${where}: env ${e.name} matches no server flag --${flag}`);
  }
  if (env(c, "REFORMER_MODEL_DIR") !== "/mnt/models") {
    findings.push(`${where}: REFORMER_MODEL_DIR must be /mnt/models (where KServe's storage initializer puts the model)`);
  }
  if (env(c, "REFORMER_MODEL_NAME") !== "{{.Name}}") {
    findings.push(`${where}: REFORMER_MODEL_NAME must be {{.Name}} (the model is served under the InferenceService's name)`);
  }
}

function checkResources(c, where, findings) {
  const req = c.resources?.requests ?? {}, lim = c.resources?.limits ?? {};
  for (const r of ["cpu", "memory"]) {
    if (lim[r] === undefined) findings.push(`${where}: no limits.${r}`);
    else if (parseQuantity(req[r]) !== parseQuantity(lim[r])) findings.push(`${where}: requests.${r} ${req[r]} != limits.${r} ${lim[r]}`);
  }
  const cpu = parseQuantity(lim.cpu);
  if (!Number.isInteger(cpu)) findings.push(`${where}: limits.cpu ${lim.cpu} is not a whole number of CPUs`);
  const workers = Number(env(c, "REFORMER_WORKERS")), threads = Number(env(c, "REFORMER_THREADS_PER_WORKER"));
  if (workers * threads !== cpu) findings.push(`${where}: REFORMER_WORKERS x REFORMER_THREADS_PER_WORKER = ${workers * threads} != CPU limit ${cpu}`);
  if (Number(env(c, "OMP_NUM_THREADS")) !== threads) findings.push(`${where}: OMP_NUM_THREADS != REFORMER_THREADS_PER_WORKER`);
}

function checkProbes(c, grpcPort, where, findings) {
  const want = { startupProbe: "readiness", readinessProbe: "readiness", livenessProbe: "liveness" };
  for (const [probe, service] of Object.entries(want)) {
    const p = c[probe];
    if (!p?.grpc) findings.push(`${where}: ${probe} must be a native gRPC probe`);
    else if (p.grpc.port !== grpcPort || p.grpc.service !== service) {
      findings.push(`${where}: ${probe} must probe service '${service}' on the gRPC port ${grpcPort} (got ${p.grpc.service}@${p.grpc.port})`);
    }
  }
}

// Returns { httpPort, grpcPort, httpPortName, preStopS, drainS } or null when the container is missing.
export function checkRuntime(rt, ctx, findings) {
  const where = `ClusterServingRuntime/${rt.metadata.name}`;
  const versions = rt.spec.protocolVersions ?? [];
  for (const v of ["v2", "grpc-v2"]) if (!versions.includes(v)) findings.push(`${where}: protocolVersions lacks ${v}`);
  if (!(rt.spec.supportedModelFormats ?? []).some((f) => f.name === "reformer" && f.autoSelect)) {
    findings.push(`${where}: no supportedModelFormats entry 'reformer' with autoSelect`);
  }
  const c = (rt.spec.containers ?? []).find((x) => x.name === "kserve-container");
  if (!c) { findings.push(`${where}: no container named kserve-container`); return null; }
  const w = `${where} kserve-container`;
  const ports = c.ports ?? [];
  const httpPort = Number(env(c, "REFORMER_HTTP_PORT")), grpcPort = Number(env(c, "REFORMER_GRPC_PORT"));
  if (ports[0]?.containerPort !== httpPort) findings.push(`${w}: the first port (KServe's Service port 80) must be REFORMER_HTTP_PORT ${httpPort}`);
  const grpc = ports.find((p) => /grpc|h2c/.test(p.name ?? ""));
  if (grpc?.containerPort !== grpcPort) findings.push(`${w}: a port named *grpc*/h2c (appProtocol h2c in KServe's Service) must be REFORMER_GRPC_PORT ${grpcPort}`);
  checkEnv(c, ctx, w, findings);
  checkResources(c, w, findings);
  checkProbes(c, grpcPort, w, findings);
  const ann = rt.spec.annotations ?? {};
  if (Number(ann["prometheus.kserve.io/port"]) !== httpPort || ann["prometheus.kserve.io/path"] !== "/metrics") {
    findings.push(`${where}: prometheus.kserve.io/port and /path must name the HTTP port and /metrics`);
  }
  const sc = c.securityContext ?? {};
  if (sc.runAsNonRoot !== true || sc.readOnlyRootFilesystem !== true) findings.push(`${w}: must run non-root with a read-only root filesystem`);
  const tmp = (c.volumeMounts ?? []).find((m) => m.mountPath === "/tmp");
  if (!tmp || !(rt.spec.volumes ?? []).some((v) => v.name === tmp.name)) findings.push(`${w}: /tmp must be a mounted volume of the runtime`);
  const cmd = c.lifecycle?.preStop?.exec?.command ?? [];
  const preStopS = cmd.at(-2)?.endsWith("sleep") ? Number(cmd.at(-1)) : 0;
  return { httpPort, grpcPort, httpPortName: ports[0]?.name, preStopS, drainS: Number(env(c, "REFORMER_DRAIN_TIMEOUT_S") ?? 30) };
}

export function checkIsvc(isvc, rt, info, findings) {
  const where = `InferenceService/${isvc.metadata.name}`;
  const ann = isvc.metadata.annotations ?? {};
  if (ann["serving.kserve.io/deploymentMode"] !== "RawDeployment") findings.push(`${where}: serving.kserve.io/deploymentMode must be RawDeployment`);
  if (ann["serving.kserve.io/autoscalerClass"] !== "external") {
    findings.push(`${where}: serving.kserve.io/autoscalerClass must be external (hpa.yaml scales it; KServe's own HPA would fight it)`);
  }
  const p = isvc.spec.predictor ?? {};
  const m = p.model ?? {};
  if (m.runtime !== rt.metadata.name) findings.push(`${where}: predictor.model.runtime ${m.runtime} != ${rt.metadata.name}`);
  if (!(rt.spec.supportedModelFormats ?? []).some((f) => f.name === m.modelFormat?.name)) {
    findings.push(`${where}: modelFormat ${m.modelFormat?.name} is not supported by ${rt.metadata.name}`);
  }
  if (m.protocolVersion && !(rt.spec.protocolVersions ?? []).includes(m.protocolVersion)) {
    findings.push(`${where}: protocolVersion ${m.protocolVersion} not in the runtime's protocolVersions`);
  }
  if (!m.storageUri) findings.push(`${where}: predictor.model.storageUri missing (the model KServe puts at /mnt/models)`);
  const grace = p.terminationGracePeriodSeconds ?? 30;
  if (grace < info.preStopS + info.drainS) {
    findings.push(`${where}: terminationGracePeriodSeconds ${grace} < preStop ${info.preStopS} s + drain ${info.drainS} s`);
  }
}

function matchesIsvcPods(selector, isvcName) {
  const want = { "serving.kserve.io/inferenceservice": isvcName, component: "predictor" };
  const keys = Object.keys(selector ?? {});
  return keys.length > 0 && keys.every((k) => want[k] === selector[k]);
}

function adapterExports(file, metric) {
  const cm = yaml.load(fs.readFileSync(file, "utf8"));
  const rules = yaml.load(cm.data["config.yaml"]).rules ?? [];
  return rules.some((r) => r.name?.as === metric);
}

// HPA, headless Service, PodMonitor.
export function checkRest(docs, isvc, info, ctx, findings) {
  const name = isvc.metadata.name, deployment = `${name}-predictor`;
  const hpa = docs.find((d) => d.kind === "HorizontalPodAutoscaler");
  if (!hpa) findings.push("no HorizontalPodAutoscaler (autoscalerClass external needs one)");
  else {
    const t = hpa.spec.scaleTargetRef;
    if (t.kind !== "Deployment" || t.name !== deployment) findings.push(`HPA: scaleTargetRef must be Deployment ${deployment} (KServe's predictor), got ${t.kind} ${t.name}`);
    const metric = hpa.spec.metrics?.find((x) => x.type === "Pods")?.pods?.metric?.name;
    if (metric !== "reformer_queue_tokens") findings.push(`HPA: must scale on the Pods metric reformer_queue_tokens (got ${metric})`);
    else if (!adapterExports(ctx.adapter, metric)) findings.push(`HPA: ${metric} is not exported by ${ctx.adapter}`);
    const p = isvc.spec.predictor;
    if (hpa.spec.minReplicas !== p.minReplicas || hpa.spec.maxReplicas !== p.maxReplicas) {
      findings.push(`HPA: min/max replicas ${hpa.spec.minReplicas}/${hpa.spec.maxReplicas} != the InferenceService's ${p.minReplicas}/${p.maxReplicas}`);
    }
  }
  const svc = docs.find((d) => d.kind === "Service");
  if (!svc || svc.spec.clusterIP !== "None") findings.push("Service: a headless Service (clusterIP: None) for gRPC round_robin is needed");
  else {
    if (!matchesIsvcPods(svc.spec.selector, name)) findings.push(`Service/${svc.metadata.name}: selector must pick ${name}'s predictor pods`);
    const port = (svc.spec.ports ?? []).find((x) => x.name === "grpc");
    if (port?.targetPort !== info.grpcPort) findings.push(`Service/${svc.metadata.name}: port grpc must target the gRPC port ${info.grpcPort}`);
  }
  const pm = docs.find((d) => d.kind === "PodMonitor");
  if (!pm) findings.push("no PodMonitor (the HPA's metric comes from scraping the pods)");
  else {
    if (!matchesIsvcPods(pm.spec.selector?.matchLabels, name)) findings.push(`PodMonitor: selector must pick ${name}'s predictor pods`);
    const ep = pm.spec.podMetricsEndpoints?.[0];
    if (ep?.port !== info.httpPortName || ep?.path !== "/metrics") findings.push(`PodMonitor: must scrape port ${info.httpPortName} path /metrics`);
  }
}
