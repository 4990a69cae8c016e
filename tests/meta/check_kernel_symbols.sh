#!/usr/bin/env bash
# The kernel objects compiled above the x86-64-v2 baseline (engine/ops/kernels/kernels_*.cc) must
# define no global or weak symbol but their own table functions: an inline function (a std::
# template, say) emitted there would be shared program-wide by the linker, and code compiled
# for AVX-512 could then run on a CPU without it (SIGILL). kernels_impl.inc explains the rule.
# usage: check_kernel_symbols.sh OBJECT...
set -euo pipefail
status=0
if [[ $# -ne 3 ]]; then echo "FAIL: expected the three kernel objects, got $#: $*"; exit 1; fi
for obj in "$@"; do
  level=$(basename "$obj" | sed -E 's/^kernels_([a-z0-9]+)\.cc\.o$/\1/')
  # nm -C: "address type name"; global/weak definitions have upper-case types (T, W, V, D, B, R, u).
  bad=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[A-Zu]$/ { $1=""; $2=""; sub(/^  /, ""); print }' |
        grep -v -E "^reformer::kernels::(${level}::Table\(\)|[A-Za-z0-9]+Table\(\))$" || true)
  count=$(nm --defined-only "$obj" | wc -l)
  if [[ -n "$bad" ]]; then
    echo "FAIL: $obj exports symbols outside reformer::kernels::${level}:"
    echo "$bad" | sed 's/^/  /'
    status=1
  else
    echo "ok: $obj (${count} symbols, exports only its table)"
  fi
done
exit $status
