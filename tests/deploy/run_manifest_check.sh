#!/usr/bin/env bash
# ctest wrapper for deploy/k8s/check: installs its npm packages when missing (npm ci from the committed lock file),
# then runs the check. --install-only: only the install. Other arguments go to check-manifests.mjs.
set -euo pipefail
src="${REFORMER_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
check="${src}/deploy/k8s/check"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node/npm not installed (Node >= 20 needed for deploy/k8s/check)"
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 20)); then
  echo "SKIP: Node ${major} found; deploy/k8s/check needs Node >= 20"
  exit 77
fi
stamp="${check}/node_modules/.package-lock.json"
if [[ ! -f "${stamp}" || "${check}/package-lock.json" -nt "${stamp}" ]]; then
  echo "run_manifest_check: npm ci in ${check}"
  (cd "${check}" && npm ci --no-audit --no-fund --loglevel=error)
fi
if [[ "${1:-}" == "--install-only" ]]; then
  echo "run_manifest_check: node_modules ready"
  exit 0
fi
exec node "${check}/check-manifests.mjs" --dir "${src}/deploy/k8s" --server-src "${src}/server" "$@"
