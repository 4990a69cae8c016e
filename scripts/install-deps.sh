#!/usr/bin/env bash
# Installs reformer-serve's build, test and tool dependencies from Debian 12 packages.
# Idempotent: packages already installed are not touched (a second run installs nothing).
# Non-interactive; needs root (run it with sudo otherwise).
set -euo pipefail

# Build + product dependencies.
PACKAGES=(
  g++ cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libdnnl-dev ocl-icd-opencl-dev libabsl-dev prometheus-cpp-dev
  libsentencepiece-dev nlohmann-json3-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # Test tooling: a real Python gRPC client, model conversion/training, monitoring checks.
  python3 python3-grpcio python3-grpc-tools python3-protobuf python3-numpy python3-yaml
  curl openssl  # openssl: the security tests make their certificates with it
)
# --test adds what the rest of the test suite needs, so that no test skips (in CI a skip is a failure):
#   python3-torch  tools/train tests, tools/convert_hf.py test, the default model's trainer parity
#   bible-kjv      the `bible` command (text in bible-kjv-text): the training corpus of the tiny-training tests
#   prometheus     promtool and the real-Prometheus scrape test (tests/deploy)
#   nodejs, npm    the Kubernetes manifest check (deploy/k8s/check, Node >= 18: Debian 12 ships 18.20 and
#                  npm 9.2; its npm packages come from the npm registry via `npm ci` and its lock file).
#                  Skipped when a node and npm are already installed (e.g. from NodeSource).
for arg in "$@"; do
  case "$arg" in
    --test)
      PACKAGES+=(python3-torch bible-kjv prometheus)
      if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        PACKAGES+=(nodejs npm)
      fi
      ;;
    -h|--help)
      echo "usage: $0 [--test]"; exit 0 ;;
    *)
      echo "install-deps: unknown argument '$arg' (usage: $0 [--test])" >&2; exit 2 ;;
  esac
done
# Optional extras, e.g. for deploy/test-image.sh:
#   REFORMER_EXTRA_PACKAGES="podman buildah debootstrap runc" scripts/install-deps.sh
if [[ -n "${REFORMER_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<<"${REFORMER_EXTRA_PACKAGES}"
  PACKAGES+=("${extra[@]}")
fi

# --test also installs the npm packages of the Node-based tests from the npm registry, each directory from its
# committed package-lock.json (`npm ci`); their ctest wrappers (tests/conformance/run_node.sh) then only
# reinstall from npm's cache, offline:
#   tests/conformance     openapi-backend (KServe v2 REST conformance against the OpenAPI document)
#   deploy/kserve/check   ajv (the KServe manifests against the KServe CRDs)
NPM_TEST_DIRS=(tests/conformance deploy/kserve/check)
npm_ci_test_dirs() {
  [[ " $* " == *" --test "* ]] || return 0
  local root d
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  for d in "${NPM_TEST_DIRS[@]}"; do
    [[ -f "${root}/${d}/package-lock.json" ]] || continue
    echo "install-deps: npm ci in ${d}"
    (cd "${root}/${d}" && npm ci --no-audit --no-fund --loglevel=error)
  done
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed; nothing to do."
  npm_ci_test_dirs "$@"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: not root; run:  sudo $0" >&2
  exit 1
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done."
npm_ci_test_dirs "$@"
