#!/usr/bin/env bash
# Builds the reformer-serve image with podman (no Docker engine needed), runs it with its ports published on
# 127.0.0.1, checks it end to end with a real gRPC client, and stops it:
#   1. base image: `debootstrap --variant=minbase bookworm` imported as localhost/bookworm-base (cached);
#   2. `podman build --isolation chroot` of the Dockerfile (BUILD_BASE = BASE = the debootstrap'd base);
#   3. image checks: runs as non-root, no compiler or -dev package inside, default model present; image size;
#   4. `podman run --cpus 1 --read-only` with -p 127.0.0.1:<free>:8001 and :8000; deploy/smoke_client.py checks
#      grpc.health.v1 SERVING, a ModelInfer answer, /metrics, /healthz, /readyz; the server's default threads follow
#      the container's CPU quota (1 worker x 1 thread);
#   5. `podman stop` (SIGTERM) must end the container with exit code 0 within 10 s.
# Prints the time of every step and the image size; exit 0 only when everything passed.
# Bounded: every step has a timeout and the whole run is capped (default 20 minutes; with a cached base and a
# warm layer cache it takes a few minutes). Not a ctest (too slow for CI); needs root, podman, runc, debootstrap
# (scripts/install-deps.sh: REFORMER_EXTRA_PACKAGES="podman buildah debootstrap runc").
#
# Usage: deploy/test-image.sh [--model-dir DIR] [--keep] [--fresh]
#   --model-dir DIR  model to bake in (default models/default; falls back to a test fixture if that has no model)
#   --keep           keep the image (default: keep; the container is always removed)
#   --fresh          rebuild the debootstrap base and drop the podman storage first
# Environment: REFORMER_IMAGE_CACHE (default /var/tmp/reformer-serve-image) holds the base tarball and the podman
# storage (graphroot), so repeated runs reuse layers and never touch the system's container storage.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${REFORMER_IMAGE_CACHE:-/var/tmp/reformer-serve-image}"
budget_s="${REFORMER_IMAGE_TEST_BUDGET_S:-1200}"
image="localhost/reformer-serve:test"
base_image="localhost/bookworm-base:latest"
container="reformer-serve-image-test-$$"
model_dir=""
fresh=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model-dir) model_dir="$2"; shift 2 ;;
    --keep) shift ;;
    --fresh) fresh=1; shift ;;
    -h|--help) echo "usage: $0 [--model-dir DIR] [--fresh]"; exit 0 ;;
    *) echo "test-image: unknown argument '$1' (usage: $0 [--model-dir DIR] [--fresh])" >&2; exit 2 ;;
  esac
done

start_all=$(date +%s)
declare -a timings=()
step_start=0
step() { step_start=$(date +%s.%N); echo "==> $*"; }
step_done() {
  local t
  t=$(awk -v a="${step_start}" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  timings+=("$(printf '%-34s %7s s' "$1" "${t}")")
  echo "    done in ${t} s"
}
remaining() { echo $((budget_s - ($(date +%s) - start_all))); }
fail() { echo "test-image: FAIL: $*" >&2; exit 1; }
bounded() {  # bounded SECONDS CMD...: runs CMD with at most SECONDS and never beyond the overall budget.
  local s="$1"; shift
  local r; r=$(remaining)
  ((r > 0)) || fail "over the ${budget_s} s budget"
  ((s < r)) || s=$r
  timeout --kill-after=10 "$s" "$@"
}

for tool in podman runc debootstrap timeout; do
  command -v "$tool" >/dev/null || fail "$tool not installed (apt-get install podman buildah debootstrap runc)"
done
[[ $(id -u) -eq 0 ]] || fail "run as root (rootful podman; debootstrap needs root)"
[[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c "import grpc, grpc_tools" || fail "/usr/bin/python3 with grpcio + grpc_tools needed"

# Model to bake in: the trained default model, or a fixture while it does not exist yet.
if [[ -z "${model_dir}" ]]; then
  model_dir="models/default"
  if [[ ! -f "${repo}/${model_dir}/config.json" || ! -f "${repo}/${model_dir}/model.safetensors" ]]; then
    model_dir="tests/fixtures/f1_mixed_causal_multihash_rightpad"
    echo "test-image: NOTE models/default has no model yet; baking in ${model_dir}"
  fi
fi
[[ -f "${repo}/${model_dir}/config.json" ]] || fail "${model_dir}/config.json missing"
vocab=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "${repo}/${model_dir}/config.json")

# Private podman configuration: storage under the cache dir, runc, rlimits this machine allows.
mkdir -p "${cache}"
if ((fresh)); then
  podman --root "${cache}/storage" --runroot "${cache}/run" system reset --force >/dev/null 2>&1 || true
  rm -rf "${cache}/storage" "${cache}/run" "${cache}/bookworm-minbase.tar"
fi
cat >"${cache}/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
cat >"${cache}/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "${cache}/storage"
runroot = "${cache}/run"
EOF
export CONTAINERS_CONF="${cache}/containers.conf" CONTAINERS_STORAGE_CONF="${cache}/storage.conf"

cleanup() {
  podman rm --force --time 0 "${container}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# 1. Base image.
step "base image ${base_image}"
if ! podman image exists "${base_image}"; then
  if [[ ! -s "${cache}/bookworm-minbase.tar" ]]; then
    rm -rf "${cache}/rootfs"
    bounded 600 debootstrap --variant=minbase bookworm "${cache}/rootfs" http://deb.debian.org/debian \
      >"${cache}/debootstrap.log" 2>&1 || { tail -20 "${cache}/debootstrap.log"; fail "debootstrap"; }
    tar -C "${cache}/rootfs" -cf "${cache}/bookworm-minbase.tar" .
    rm -rf "${cache}/rootfs"
  fi
  bounded 300 podman import --quiet "${cache}/bookworm-minbase.tar" "${base_image}" >/dev/null
  step_done "base image (debootstrap + import)"
else
  step_done "base image (cached)"
fi

# 2. Build.
step "podman build (${image}, model ${model_dir})"
if ! bounded 1080 podman build --isolation chroot --layers \
    --build-arg BUILD_BASE="${base_image}" --build-arg BASE="${base_image}" \
    --build-arg MODEL_DIR="${model_dir}" --build-arg JOBS="$(nproc)" \
    -t "${image}" -f "${repo}/Dockerfile" "${repo}" >"${cache}/build.log" 2>&1; then
  tail -40 "${cache}/build.log" | sed 's/^/    | /'
  fail "podman build (full log: ${cache}/build.log)"
fi
grep -E '^(STEP|runtime packages:|COMMIT)' "${cache}/build.log" | sed 's/^/    | /' | cut -c1-240
step_done "podman build"

# 3. Image checks.
step "image checks"
size_bytes=$(podman image inspect --format '{{.Size}}' "${image}")
size_mb=$(awk -v b="${size_bytes}" 'BEGIN{printf "%.0f", b/1e6}')
user=$(podman image inspect --format '{{.Config.User}}' "${image}")
[[ -n "${user}" && "${user%%:*}" != "0" && "${user%%:*}" != "root" ]] || fail "image runs as root (User='${user}')"
uid=$(podman run --rm --entrypoint /usr/bin/id "${image}" -u)
[[ "${uid}" != "0" ]] || fail "container process runs as uid 0"
dev=$(podman run --rm --entrypoint /usr/bin/dpkg-query "${image}" -W -f '${Package}\n' | grep -E -- '-dev$|^(gcc|g\+\+|cpp|clang|cmake|make|ninja-build)(-[0-9.]+)?$' || true)
[[ -z "${dev}" ]] || fail "build tools or -dev packages in the runtime image: ${dev}"
podman run --rm --entrypoint /bin/ls "${image}" /opt/reformer-serve/models/default/config.json >/dev/null \
  || fail "default model missing at /opt/reformer-serve/models/default"
echo "    image ${image}: ${size_mb} MB, user ${user} (uid ${uid}), no -dev packages or compilers"
step_done "image checks"

# 4. Run and probe.
read -r grpc_port http_port < <(/usr/bin/python3 -c "
import socket
s=[socket.socket() for _ in range(2)]
[x.bind(('127.0.0.1',0)) for x in s]
print(*[x.getsockname()[1] for x in s])")
step "podman run (gRPC 127.0.0.1:${grpc_port}, HTTP 127.0.0.1:${http_port})"
podman run -d --name "${container}" -p "127.0.0.1:${grpc_port}:8001" -p "127.0.0.1:${http_port}:8000" \
  --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges --cpus 1 \
  "${image}" >/dev/null || fail "podman run"
if ! bounded 240 /usr/bin/python3 "${repo}/deploy/smoke_client.py" --grpc "127.0.0.1:${grpc_port}" \
    --http "127.0.0.1:${http_port}" --model-name default --max-id $((vocab - 1)) --wait 180 \
    --source-dir "${repo}" 2>&1 | sed 's/^/    | /'; then
  podman logs "${container}" 2>&1 | tail -30 | sed 's/^/    log| /'
  fail "smoke checks against the running container"
fi
# The container gets 1 CPU (cgroup quota): the server's default workers x threads must follow it.
threads_line=$(podman logs "${container}" 2>&1 | grep -E -m1 '[0-9]+ workers x [0-9]+ threads' || true)
echo "    server: ${threads_line#*] }"
if [[ "${threads_line}" =~ ([0-9]+)\ workers\ x\ ([0-9]+)\ threads ]]; then
  (( BASH_REMATCH[1] * BASH_REMATCH[2] == 1 )) \
    || fail "with --cpus 1 the server runs ${BASH_REMATCH[1]} workers x ${BASH_REMATCH[2]} threads (want 1 in total)"
else
  echo "    WARNING: no 'N workers x M threads' line in the server log; CPU quota default not checked"
fi
step_done "run + gRPC/HTTP smoke checks"

# 5. Graceful stop: SIGTERM to PID 1, exit 0 within 10 s (podman would SIGKILL after 10 s -> 137).
step "podman stop (SIGTERM, 10 s)"
t0=$(date +%s.%N)
podman stop --time 10 "${container}" >/dev/null
t1=$(date +%s.%N)
stop_s=$(awk -v a="${t0}" -v b="${t1}" 'BEGIN{printf "%.2f", b-a}')
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "${container}")
echo "    container stopped in ${stop_s} s with exit code ${exit_code}"
podman logs "${container}" 2>&1 | tail -5 | sed 's/^/    log| /'
[[ "${exit_code}" == "0" ]] || fail "exit code ${exit_code} after SIGTERM (want 0)"
awk -v s="${stop_s}" 'BEGIN{exit !(s < 10)}' || fail "stop took ${stop_s} s (want < 10 s)"
step_done "graceful stop"

total=$(( $(date +%s) - start_all ))
echo
echo "test-image: PASS in ${total} s (budget ${budget_s} s)"
printf '  %s\n' "${timings[@]}"
echo "  image ${image}: ${size_mb} MB (${size_bytes} bytes); stop after SIGTERM: ${stop_s} s, exit ${exit_code}"
