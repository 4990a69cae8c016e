#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time on a scratch copy of its seed corpus plus its
# regression inputs (the repository is never written), and prints its statistics.
#   run_fuzzer.sh FUZZER NAME SECONDS [more libFuzzer flags]
# FUZZER is the binary built with -DREFORMER_FUZZ=ON; NAME selects fuzz/corpus/NAME,
# fuzz/regressions/NAME and fuzz/dicts/NAME.dict. A crash leaves its input in
# $REFORMER_FUZZ_ARTIFACTS/NAME/ (default ./fuzz-artifacts/NAME/) and exits non-zero.
# Environment: REFORMER_FUZZ_KEEP_CORPUS=DIR copies the grown corpus to DIR (long runs).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 FUZZER NAME SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
fuzzer=$1 name=$2 seconds=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/reformer-fuzz-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
cp -r "$here/corpus/$name/." "$work/corpus/"
rm -f "$work/corpus"/README*
artifacts=${REFORMER_FUZZ_ARTIFACTS:-$PWD/fuzz-artifacts}/$name
mkdir -p "$artifacts"
extra=()
[[ -f $here/dicts/$name.dict ]] && extra+=("-dict=$here/dicts/$name.dict")
[[ -d $here/regressions/$name ]] && extra+=("$here/regressions/$name")

echo "fuzz $name: ${seconds}s, corpus $(ls "$work/corpus" | wc -l) seeds, artifacts in $artifacts"
status=0
"$fuzzer" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2560 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" "$work/corpus" "${extra[@]}" > "$work/log" 2>&1 || status=$?
# The last status line (execs, coverage) and the final statistics.
grep -E '^#[0-9]+' "$work/log" | tail -n 1 || true
grep -E '^stat::' "$work/log" || true
if [[ $status -ne 0 ]]; then
  echo "fuzz $name: FAILED (exit $status); the fuzzer's output:" >&2
  tail -n 80 "$work/log" >&2
  ls -l "$artifacts" >&2
  exit 1
fi
if [[ -n ${REFORMER_FUZZ_KEEP_CORPUS:-} ]]; then
  mkdir -p "$REFORMER_FUZZ_KEEP_CORPUS/$name"
  cp -r "$work/corpus/." "$REFORMER_FUZZ_KEEP_CORPUS/$name/"
fi
echo "fuzz $name: no crash in ${seconds}s, corpus $(ls "$work/corpus" | wc -l) inputs"
