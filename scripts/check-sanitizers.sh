#!/usr/bin/env bash
# The sanitizer and fuzzing suites (README "Sanitizers and fuzzing"; .ci/run runs all three). Each
# has its own build directory and builds only the programs its tests need (REFORMER_TESTS selects
# the tests, target reformer_test_programs builds them).
#   scripts/check-sanitizers.sh asan|tsan|fuzz|all
#   asan  g++ -fsanitize=address,undefined: the engine, weights, batching, server and security tests (gtest
#         programs, the Python client tests of reformer-server / reformer-cli) and the fuzz replays.
#   tsan  g++ -fsanitize=thread with a TSan-built Abseil (scripts/build-tsan-abseil.sh, in the
#         build directory): the batching, inference, gRPC, HTTP and security tests and the race canaries,
#         judged by tests/sanitizers/tsan_run.py.
#   fuzz  clang++ libFuzzer + ASan + UBSan: each fuzz target for REFORMER_FUZZ_SECONDS (30) and
#         the replays of corpus and regressions (fuzz/README.md).
# Environment: JOBS (build jobs, default nproc), REFORMER_BUILD_PREFIX (where build-* go, default .).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc)}
out=${REFORMER_BUILD_PREFIX:-.}
launcher=()
command -v ccache >/dev/null 2>&1 && [[ -n ${CCACHE_DIR:-} ]] && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

# Test selections (regular expressions over test names; a new test program joins a run by its name).
ASAN_TESTS='^(engine_|loader_test$|batching_|inference_|generation_service_test$|grpc_|http_|request_|security_token_store_test$|security_tls_material_test$|python_kserve_client_test$|python_cli_client_test$|python_http_front_test$|fuzz_replay_)'
# (batching_loadgen_test is a Python test of reformer-server: not built for TSan.)
TSAN_TESTS='^(batching_scheduler_test$|batching_memory_budget_test$|inference_|generation_service_test$|grpc_engine_test$|grpc_service_test$|grpc_generate_test$|http_|request_|security_token_store_test$|security_tls_material_test$|tsan_)'
FUZZ_TESTS='^fuzz_(replay_|smoke_(safetensors|config|tokenizer_bytes|sentencepiece|token_file|tls_pem|kserve_infer|reformer_v1|generate_request|rest_infer|generate_json|http_head)$)'

# Runs a step and prints its wall time (.ci/run's log shows each stage's build and ctest apart).
timed() {
  local t0=$SECONDS
  "$@"
  echo "== check-sanitizers: $* ... done in $((SECONDS - t0)) s"
}

deps() {
  # clang + its runtimes (libFuzzer, sanitizers) and dpkg-dev (apt-get source) on top of the
  # project's dependencies.
  REFORMER_EXTRA_PACKAGES="clang libclang-rt-14-dev dpkg-dev ${REFORMER_EXTRA_PACKAGES:-}" ./scripts/install-deps.sh
}

run_asan() {
  cmake -S . -B "$out/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
    -DREFORMER_SANITIZE=address,undefined -DREFORMER_BUILD_BENCHMARKS=OFF "-DREFORMER_TESTS=$ASAN_TESTS"
  timed cmake --build "$out/build-asan" -j "$jobs" --target reformer_test_programs reformer-server reformer-cli
  # Two tests at a time: every test that serves binds port 0 (in-process gRPC/HTTP servers, the Python
  # tests' reformer-server), none asserts timings (docs/results/fuzz.md, "CI time").
  timed ctest --test-dir "$out/build-asan" --output-on-failure -j 2
}

run_tsan() {
  timed ./scripts/build-tsan-abseil.sh "$out/build-tsan/abseil-tsan" "$jobs"
  cmake -S . -B "$out/build-tsan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
    -DREFORMER_SANITIZE=thread "-DREFORMER_ABSEIL_PREFIX=$(realpath "$out/build-tsan/abseil-tsan")" \
    -DREFORMER_BUILD_BENCHMARKS=OFF "-DREFORMER_TESTS=$TSAN_TESTS"
  timed cmake --build "$out/build-tsan" -j "$jobs" --target reformer_test_programs
  timed ctest --test-dir "$out/build-tsan" --output-on-failure
}

run_fuzz() {
  cmake -S . -B "$out/build-fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" \
    -DCMAKE_CXX_COMPILER=clang++ -DREFORMER_FUZZ=ON -DREFORMER_SANITIZE=address,undefined \
    -DREFORMER_BUILD_BENCHMARKS=OFF "-DREFORMER_TESTS=$FUZZ_TESTS"
  timed cmake --build "$out/build-fuzz" -j "$jobs" --target reformer_test_programs
  # Two fuzzers at a time: each is single-threaded.
  timed ctest --test-dir "$out/build-fuzz" --output-on-failure -j 2
}

case "${1:-}" in
  asan) deps; run_asan ;;
  tsan) deps; run_tsan ;;
  fuzz) deps; run_fuzz ;;
  all) deps; run_asan; run_tsan; run_fuzz ;;
  *) echo "usage: $0 asan|tsan|fuzz|all" >&2; exit 2 ;;
esac
