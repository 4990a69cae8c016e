#!/usr/bin/env bash
# Every engine object but the per-level kernel files (engine/ops/kernels/kernels_<level>.cc) must be
# x86-64-v2 code: no VEX/EVEX instruction (AVX, AVX2, FMA, AVX-512: mnemonics starting with "v",
# ymm/zmm/opmask registers). Code above the baseline runs only through the dispatched kernel
# tables (docs/isa.md §1); an object compiled with a higher -march would make the binaries die
# with SIGILL on an x86-64-v2 CPU.
# usage: check_baseline_isa.sh ARCHIVE...
set -euo pipefail
status=0
for lib in "$@"; do
  # objdump prints "<member>:     file format ..." before each archive member's code.
  report=$(objdump -d --no-show-raw-insn "$lib" | awk '
    /:[ \t]+file format/ { member = $1; sub(/:$/, "", member); next }
    member ~ /kernels_(avx512|avx2|portable)\.cc\.o$/ { next }
    /^[ \t]*[0-9a-f]+:\t/ {
      split($0, f, "\t"); insn = f[2]
      if (insn ~ /^v[a-z0-9]+[ \t]/ || insn ~ /%[yz]mm[0-9]/ || insn ~ /%k[0-7]/) {
        if (!(member in bad)) { bad[member] = insn; order[++n] = member }
      }
    }
    END { for (i = 1; i <= n; ++i) printf "  %s: %s\n", order[i], bad[order[i]] }')
  members=$(ar t "$lib" | wc -l)
  if [[ -n "$report" ]]; then
    echo "FAIL: $lib has objects above x86-64-v2 outside the kernel tables (first such instruction):"
    echo "$report"
    status=1
  else
    echo "ok: $lib ($members objects; only the kernel objects use instructions above x86-64-v2)"
  fi
done
exit $status
