// Known-bad variants of deploy/kserve for `check-kserve.mjs --self-test`: [name, mutate(docs), finding pattern].
// Schema mutations prove the CRD validation is strict (unknown fields, types, list-map keys); policy mutations
// prove each rule can fail.
const kind = (docs, k) => docs.find((d) => d.kind === k);
const rt = (docs) => kind(docs, "ClusterServingRuntime");
const ctr = (docs) => rt(docs).spec.containers[0];
const isvc = (docs) => kind(docs, "InferenceService");
const setEnv = (docs, name, value) => {
  const c = ctr(docs);
  c.env = c.env.filter((e) => e.name !== name);
  if (value !== undefined) c.env.push({ name, value });
};

export const MUTATIONS = [
  // --- CRD schema ---------------------------------------------------------------------------------------------
  ["unknown field in the runtime spec", (d) => { rt(d).spec.protocolVersion = "v2"; }, /CRD.*additional properties 'protocolVersion'/],
  ["misspelt probe field", (d) => { ctr(d).readinessProbe.grpc.serivce = "readiness"; }, /CRD.*additional properties 'serivce'/],
  ["misspelt storageUri", (d) => { const m = isvc(d).spec.predictor.model; m.storageURI = m.storageUri; delete m.storageUri; },
    /CRD.*additional properties 'storageURI'/],
  ["minReplicas as a string", (d) => { isvc(d).spec.predictor.minReplicas = "2"; }, /CRD.*minReplicas must be integer/],
  ["duplicate container port (list-map key)", (d) => { ctr(d).ports.push({ ...ctr(d).ports[0], name: "http2" }); },
    /CRD.*duplicate map entry/],
  ["int32 out of range", (d) => { isvc(d).spec.predictor.minReplicas = 2 ** 33; }, /CRD.*minReplicas must match format "int32"/],
  ["model format without name", (d) => { delete isvc(d).spec.predictor.model.modelFormat.name; },
    /CRD.*required property 'name'/],
  ["a transformer (not used here)", (d) => { isvc(d).spec.transformer = { containers: [] }; }, /CRD.*\/spec\/transformer must NOT be valid/],
  ["InferenceService name not a DNS-1035 label", (d) => { isvc(d).metadata.name = "Reformer_Model"; }, /not a DNS-1035 label/],
  ["runtime metadata label value too long", (d) => { rt(d).metadata.labels.x = "a".repeat(64); }, /label x/],
  ["HPA minReplicas as a string", (d) => { kind(d, "HorizontalPodAutoscaler").spec.minReplicas = "2"; }, /schema: HorizontalPodAutoscaler/],
  ["PodMonitor endpoint interval typo", (d) => { kind(d, "PodMonitor").spec.podMetricsEndpoints[0].interval = "15 seconds"; },
    /schema: PodMonitor/],
  // --- runtime policy ---------------------------------------------------------------------------------------
  ["no grpc-v2 protocol", (d) => { rt(d).spec.protocolVersions = ["v2"]; }, /protocolVersions lacks grpc-v2/],
  ["no reformer model format", (d) => { rt(d).spec.supportedModelFormats[0].name = "onnx"; }, /no supportedModelFormats entry 'reformer'/],
  ["container not named kserve-container", (d) => { ctr(d).name = "server"; }, /no container named kserve-container/],
  ["gRPC port first (KServe's port 80 would be gRPC)", (d) => { ctr(d).ports.reverse(); }, /first port .* REFORMER_HTTP_PORT/],
  ["gRPC env port disagrees", (d) => setEnv(d, "REFORMER_GRPC_PORT", "9000"), /REFORMER_GRPC_PORT 9000/],
  ["model dir not /mnt/models", (d) => setEnv(d, "REFORMER_MODEL_DIR", "/models"), /REFORMER_MODEL_DIR must be \/mnt\/models/],
  ["model name fixed", (d) => setEnv(d, "REFORMER_MODEL_NAME", "default"), /REFORMER_MODEL_NAME must be \{\{\.Name\}\}/],
  ["misspelt env var", (d) => setEnv(d, "REFORMER_MAX_CONECTION_AGE_S", "300"), /matches no server flag --max_conection_age_s/],
  ["threads x workers != CPU limit", (d) => setEnv(d, "REFORMER_WORKERS", "3"), /!= CPU limit/],
  ["requests below limits", (d) => { ctr(d).resources.requests.memory = "2Gi"; }, /requests\.memory .* != limits\.memory/],
  ["readiness probe on HTTP", (d) => { ctr(d).readinessProbe = { httpGet: { path: "/v2/health/ready", port: 8080 } }; },
    /readinessProbe must be a native gRPC probe/],
  ["liveness probing readiness", (d) => { ctr(d).livenessProbe.grpc.service = "readiness"; }, /livenessProbe must probe service 'liveness'/],
  ["metrics port annotation wrong", (d) => { rt(d).spec.annotations["prometheus.kserve.io/port"] = "8081"; }, /prometheus\.kserve\.io\/port/],
  ["writable root filesystem", (d) => { ctr(d).securityContext.readOnlyRootFilesystem = false; }, /read-only root filesystem/],
  // --- InferenceService / HPA / Service / PodMonitor policy ------------------------------------------------------
  ["Serverless mode", (d) => { isvc(d).metadata.annotations["serving.kserve.io/deploymentMode"] = "Serverless"; }, /must be RawDeployment/],
  ["KServe's CPU HPA left on", (d) => { delete isvc(d).metadata.annotations["serving.kserve.io/autoscalerClass"]; }, /autoscalerClass must be external/],
  ["another runtime", (d) => { isvc(d).spec.predictor.model.runtime = "kserve-tritonserver"; }, /predictor\.model\.runtime/],
  ["unsupported model format", (d) => { isvc(d).spec.predictor.model.modelFormat.name = "onnx"; }, /modelFormat onnx is not supported/],
  ["no storageUri", (d) => { delete isvc(d).spec.predictor.model.storageUri; }, /storageUri missing/],
  ["grace period shorter than preStop + drain", (d) => { isvc(d).spec.predictor.terminationGracePeriodSeconds = 20; },
    /terminationGracePeriodSeconds 20 < preStop 5 s \+ drain 30 s/],
  ["HPA targets the wrong Deployment", (d) => { kind(d, "HorizontalPodAutoscaler").spec.scaleTargetRef.name = "reformer"; },
    /scaleTargetRef must be Deployment reformer-predictor/],
  ["HPA on CPU", (d) => { kind(d, "HorizontalPodAutoscaler").spec.metrics = [{ type: "Resource",
    resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 80 } } }]; }, /Pods metric reformer_queue_tokens/],
  ["HPA metric the adapter does not export", (d) => { kind(d, "HorizontalPodAutoscaler").spec.metrics[0].pods.metric.name = "reformer_queue_requests"; },
    /Pods metric reformer_queue_tokens/],
  ["HPA bounds differ from the isvc", (d) => { kind(d, "HorizontalPodAutoscaler").spec.maxReplicas = 4; }, /min\/max replicas/],
  ["Service not headless", (d) => { delete kind(d, "Service").spec.clusterIP; }, /headless Service/],
  ["Service selects other pods", (d) => { kind(d, "Service").spec.selector["serving.kserve.io/inferenceservice"] = "other"; },
    /selector must pick reformer's predictor pods/],
  ["Service targets the HTTP port", (d) => { kind(d, "Service").spec.ports[0].targetPort = 8080; }, /must target the gRPC port 8081/],
  ["PodMonitor selects other pods", (d) => { kind(d, "PodMonitor").spec.selector.matchLabels.component = "transformer"; },
    /PodMonitor: selector/],
  ["PodMonitor scrapes gRPC", (d) => { kind(d, "PodMonitor").spec.podMetricsEndpoints[0].port = "grpc"; }, /must scrape port http/],
];
