#!/usr/bin/env bash
# ctest wrapper for the Node-based checks (tests/conformance, deploy/kserve/check):
#   run_node.sh DIR --install-only        make DIR/node_modules match DIR/package-lock.json
#   run_node.sh DIR SCRIPT.mjs ARGS...    then run node DIR/SCRIPT.mjs ARGS...
# The packages come from the npm registry in scripts/install-deps.sh --test (`npm ci` with the committed lock
# file). Here node_modules is only rebuilt from npm's local cache (`npm ci --offline`) when it is missing or
# older than the lock file: a test never reaches the network. Missing Node or packages are a failure that says
# what to run (exit 77 = skipped only where reformer_allow_skip allows it, never in CI).
set -euo pipefail
dir="$1"; shift
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIPPED: node/npm not installed (scripts/install-deps.sh --test installs them)"
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 18)); then
  echo "SKIPPED: Node ${major} found; ${dir} needs Node >= 18"
  exit 77
fi
stamp="${dir}/node_modules/.package-lock.json"
if [[ ! -f "${stamp}" || "${dir}/package-lock.json" -nt "${stamp}" ]]; then
  echo "run_node: npm ci --offline in ${dir}"
  if ! (cd "${dir}" && npm ci --offline --no-audit --no-fund --loglevel=error); then
    echo "run_node: ${dir}: packages not in npm's cache; run scripts/install-deps.sh --test (npm ci from the registry)"
    exit 1
  fi
fi
if [[ "${1:-}" == "--install-only" ]]; then
  echo "run_node: ${dir}/node_modules ready"
  exit 0
fi
script="$1"; shift
exec node "${dir}/${script}" "$@"
