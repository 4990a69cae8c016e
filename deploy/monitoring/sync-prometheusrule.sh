#!/usr/bin/env bash
# Regenerates deploy/k8s/prometheusrule.yaml (Prometheus Operator) from deploy/monitoring/alerts.yml, so the two
# never drift (the manifest check compares them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${here}/../k8s/prometheusrule.yaml"
{
  echo "# GENERATED from deploy/monitoring/alerts.yml by deploy/monitoring/sync-prometheusrule.sh; do not edit."
  echo "apiVersion: monitoring.coreos.com/v1"
  echo "kind: PrometheusRule"
  echo "metadata:"
  echo "  name: reformer-serve"
  echo "  labels:"
  echo "    app.kubernetes.io/name: reformer-serve"
  echo "    app.kubernetes.io/component: server"
  echo "spec:"
  grep -v '^#' "${here}/alerts.yml" | sed 's/^/  /'
} >"${out}"
echo "wrote ${out}"
