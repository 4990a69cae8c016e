#!/usr/bin/env bash
# The long fuzzing run (fuzz/README.md): every fuzz target, one after the other, for SECONDS each
# (default 3600), each on the corpus grown by the previous long runs in BUILD/fuzz-corpus (seeded
# from fuzz/corpus), then a table of executions and coverage for docs/results/fuzz.md.
#   fuzz/long_run.sh BUILD [SECONDS] [TARGET...]
# BUILD is a build directory configured with -DREFORMER_FUZZ=ON (README "Sanitizers and fuzzing").
# Crashes: inputs in BUILD/fuzz-artifacts/TARGET/; the run goes on with the next target and exits 1.
set -uo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD [SECONDS] [TARGET...]" >&2
  exit 2
fi
build=$(realpath "$1")
seconds=${2:-3600}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for f in "$build"/fuzz/*_fuzzer; do targets+=("$(basename "$f" _fuzzer)"); done
fi
export REFORMER_FUZZ_ARTIFACTS=$build/fuzz-artifacts
export REFORMER_FUZZ_KEEP_CORPUS=$build/fuzz-corpus
failed=0
summary=()
for t in "${targets[@]}"; do
  extra=()
  # The request targets' flags as in fuzz/CMakeLists.txt (FUZZER_ARGS).
  case $t in
    kserve_infer | reformer_v1 | generate_request) extra+=(-malloc_limit_mb=64) ;;
    rest_infer) extra+=(-malloc_limit_mb=64 -max_len=4096) ;;
  esac
  # Start from the corpus the previous long runs grew (run_fuzzer.sh adds fuzz/corpus/$t itself).
  [[ -d $REFORMER_FUZZ_KEEP_CORPUS/$t ]] && extra+=("$REFORMER_FUZZ_KEEP_CORPUS/$t")
  log=$(mktemp)
  if "$here/run_fuzzer.sh" "$build/fuzz/${t}_fuzzer" "$t" "$seconds" "${extra[@]}" 2>&1 | tee "$log"; then
    result=ok
  else
    result=CRASH
    failed=1
  fi
  line=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  summary+=("| $t | ${seconds} s | ${execs:-?} | $(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$line") | $(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$line") | $(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' <<<"$line") | $result |")
  rm -f "$log"
done
echo
echo "| target | time | executions | cov (edges) | ft (features) | corpus | result |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
exit $failed
