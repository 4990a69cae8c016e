#!/usr/bin/env bash
# ctest wrapper for deploy/k8s/check: installs its npm packages when missing (npm ci from the committed lock file),
# then runs the check. --install-only: only the install. Other arguments go to check-manifests.mjs.
set -euo pipefail
src="${REFORMER_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
check="${src}/deploy/k8s/check"
# Node >= 18: Debian 12's nodejs (18.20) and npm (9.2) run it; scripts/install-deps.sh --test installs them.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIPPED: node/npm not installed (Debian packages nodejs, npm: scripts/install-deps.sh --test)"
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 18)); then
  echo "SKIPPED: Node ${major} found; deploy/k8s/check needs Node >= 18"
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
