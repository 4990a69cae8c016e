#!/usr/bin/env bash
# promtool checks of deploy/monitoring: the config and alert rules load, the alert unit tests pass (every alert
# fires on a failing series and stays silent on a healthy one), and every PromQL expression of the Grafana
# dashboard and the prometheus-adapter rule parses.
set -euo pipefail
src="${REFORMER_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
mon="${src}/deploy/monitoring"
if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool not installed (Debian package prometheus)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
set -x
promtool check rules "${mon}/alerts.yml"
promtool check config "${mon}/prometheus.yml"
(cd "${mon}" && promtool test rules alerts_test.yml)
/usr/bin/python3 "${src}/tests/deploy/monitoring_queries.py" --source-dir "${src}" --check-dashboard --as-rules "${tmp}/queries.yml"
promtool check rules "${tmp}/queries.yml"
