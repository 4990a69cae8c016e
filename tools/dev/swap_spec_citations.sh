#!/usr/bin/env bash
# Rewrites citations of the external Reformer spec ("SPEC §n", "SPEC.md", ../shared/reformer/SPEC.md)
# into citations of docs/engine-numerics.md ("engine-numerics §m"), by the map in that document's
# Appendix A. Run it once, from a clean tree, after the branches that edit the engine have landed;
# then run tools/dev/check_citations.sh.
#
# Usage: tools/dev/swap_spec_citations.sh [--dry-run] [source-root]
#   --dry-run  copy the tracked files to a scratch directory, rewrite the copy, print the diff and
#              the checker's verdict on the copy; the tree itself is not touched.
# Exit status: 0 on success; 1 if a citation names a SPEC section the map does not know (the file
# is left unchanged and named), or on a usage error.
set -euo pipefail
export LC_ALL=C.UTF-8 2>/dev/null || export LC_ALL=C

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$dry_run" = 1 ]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  (cd "$root" && git ls-files -z | xargs -0 cp --parents -t "$scratch")
  cp "$here/swap_spec_citations.sh" "$here/check_citations.sh" "$scratch/tools/dev/" 2>/dev/null || true
  cp -r "$scratch" "$scratch.orig"
  trap 'rm -rf "$scratch" "$scratch.orig"' EXIT
  bash "$here/swap_spec_citations.sh" "$scratch"
  (cd "$scratch.orig" && diff -ru . "$scratch" | sed -e "s#$scratch#b#g" -e 's#^--- \./#--- a/#') || true
  echo "== check_citations.sh on the rewritten copy:"
  bash "$here/check_citations.sh" "$scratch" || true
  exit 0
fi

cd "$root"

# The rewrite, as sed programs (GNU sed, -E). Order matters:
#  1. whole phrases whose best target is not the section-for-section map;
#  2. lines whose context picks a finer section than the map would;
#  3. every remaining citation: "SPEC §n", "SPEC.md §n", "SPEC.md section n", "SPEC n" become
#     "engine-numerics @@§n"; numbers continuing the same citation ("§7.4-7.5, §8", "§6/§10") get the
#     marker too; then each marked number is mapped (subsections before their parents). A marker left
#     over means a section the map does not know: the script stops with an error for that file;
#  4. plain mentions of the document become its path in this repository.
phrases=$(cat <<'SED'
s/SPEC §3-§9/engine-numerics §4-§9/g
s/SPEC §5 step 1/engine-numerics §5.2/g
s/SPEC §6\/§10:/engine-numerics §6, §9:/g
s/SPEC §6('s)? float32 form/engine-numerics §6.2\1 float32 form/g
s/SPEC §7\.3, §7\.4/engine-numerics §7.3-§7.5/g
s/\(reversible, as in SPEC\.md\)/(reversible, as in docs\/engine-numerics.md §5)/g
s/an independent float32 implementation that follows SPEC\.md \(HF-faithful\)/an independent float32 implementation of the Reformer numerics (HF-faithful; described in docs\/engine-numerics.md)/g
s/\(baselines\.md FLOP\/token\)/(engine-numerics §12.1 FLOP\/token)/g
s/\/\/ baselines\.md \(2 x multiply-adds\)/\/\/ engine-numerics §12.1 (2 x multiply-adds)/g
SED
)
context=$(cat <<'SED'
/num_buckets|null|HF's rule/ s/SPEC(\.md)? (§)?7\.3/engine-numerics §1.3/g
/padding_bucket|padding bucket|mask has padding/ s/SPEC §7\.3/engine-numerics §7.4/g
/num_hidden_layers/ s/SPEC §1([^.0-9]|$)/engine-numerics §1.2\1/g
/has a mask|mask exists/ s/SPEC §3([^.0-9-]|$)/engine-numerics §4.2\1/g
/lcm|internal padding/ s/SPEC §3([^.0-9-]|$)/engine-numerics §4.1\1/g
/[Ff]inal 2H LayerNorm|final LayerNorm/ s/SPEC §5([^.0-9]|$)/engine-numerics §5.5\1/g
/LayerNorm/ s/SPEC §5([^.0-9]|$)/engine-numerics §5.3\1/g
/legacy|pre-4\.31|persistent buffers/ s/SPEC §2([^.0-9]|$)/engine-numerics §2.3\1/g
SED
)
# tools/train/reformer_torch.py cites the spec as "(section n)" and "section n:"; elsewhere the word
# "section" is left alone.
python_sections=$(cat <<'SED'
s/\(section 3-9\)/(engine-numerics §4-§9)/g
/num_buckets|null|HF's rule/ s/section 7\.3/engine-numerics §1.3/g
s/\(section ([0-9])/(engine-numerics @@§\1/g
s/section ([0-9][0-9.]*):/engine-numerics @@§\1:/g
SED
)
map=$(cat <<'SED'
s/SPEC(\.md)? (§|section )([0-9])/engine-numerics @@§\3/g
s/SPEC(\.md)? ([0-9])/engine-numerics @@§\2/g
:more
s/(@@§[0-9]+(\.[0-9]+)*)( ?(-|–) ?)(§)?([0-9])/\1\3@@§\6/
t more
s/(@@§[0-9]+(\.[0-9]+)*)( ?(,|\/) ?)§([0-9])/\1\3@@§\5/
t more
s/@@§10\.1([^0-9]|$)/§9.1\1/g
s/@@§10\.2([^0-9]|$)/§9.2\1/g
s/@@§10\.3([^0-9]|$)/§9.3\1/g
s/@@§10\.4([^0-9]|$)/§9.4\1/g
s/@@§10\.5([^0-9]|$)/§9.5\1/g
s/@@§10\.6([^0-9]|$)/§9.6\1/g
s/@@§10\.7([^0-9]|$)/§9.7\1/g
s/@@§7\.1([^0-9]|$)/§7.1\1/g
s/@@§7\.2([^0-9]|$)/§7.2\1/g
s/@@§7\.3([^0-9]|$)/§7.3\1/g
s/@@§7\.4([^0-9]|$)/§7.5\1/g
s/@@§7\.5([^0-9]|$)/§7.6\1/g
s/@@§7\.6([^0-9]|$)/§7.7\1/g
s/@@§10([^.0-9]|\.([^0-9]|$)|$)/§9\1/g
s/@@§11([^.0-9]|\.([^0-9]|$)|$)/§13\1/g
s/@@§12([^.0-9]|\.([^0-9]|$)|$)/§5.6\1/g
s/@@§13([^.0-9]|\.([^0-9]|$)|$)/§12.2\1/g
s/@@§1([^.0-9]|\.([^0-9]|$)|$)/§1\1/g
s/@@§2([^.0-9]|\.([^0-9]|$)|$)/§2\1/g
s/@@§3([^.0-9]|\.([^0-9]|$)|$)/§4\1/g
s/@@§4([^.0-9]|\.([^0-9]|$)|$)/§5.1\1/g
s/@@§5([^.0-9]|\.([^0-9]|$)|$)/§5\1/g
s/@@§6([^.0-9]|\.([^0-9]|$)|$)/§6\1/g
s/@@§7([^.0-9]|\.([^0-9]|$)|$)/§7\1/g
s/@@§8([^.0-9]|\.([^0-9]|$)|$)/§8\1/g
s/@@§9([^.0-9]|\.([^0-9]|$)|$)/§5.6\1/g
SED
)
plain=$(cat <<'SED'
s#(\.\./shared|/work/shared)/reformer/SPEC\.md#docs/engine-numerics.md#g
s#\bSPEC\.md\b#docs/engine-numerics.md#g
SED
)

list_files() {
  if git -C . rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files
  else
    find . -type f ! -path './.git/*' ! -path './build*' | sed 's|^\./||' | sort
  fi
}

mapfile -t targets < <(list_files |
  grep -Ev '^(docs/engine-numerics\.md|tools/dev/(check_citations|swap_spec_citations)\.sh)$' |
  while read -r f; do
    if [ -f "$f" ]; then grep -IlE '\bSPEC\b|baselines\.md (FLOP|\(2 x)' "$f" 2>/dev/null || true; fi
  done)

# A citation grows by 11 characters ("SPEC §" -> "engine-numerics §"). In source files a rewritten
# line that now exceeds the 100-column limit is re-wrapped: a comment or docstring line passes its
# overflowing words to the next line of the same paragraph (same indent and comment marker), or to a
# new line after it; a comment trailing code moves to its own line above the code; "// ---- x ----"
# banners are left long. Lines the swap did not change are left alone (the files are not
# clang-format clean, so clang-format is not run).
rewrap=$(cat <<'PY'
import re, sys
orig_path, new_path = sys.argv[1], sys.argv[2]
orig = open(orig_path, encoding="utf-8").read().split("\n")
lines = open(new_path, encoding="utf-8").read().split("\n")
LIMIT = 100
PREFIX = re.compile(r"^(\s*(?://|#)? ?)(\S.*)$")

def prefix_of(line):
    m = PREFIX.match(line)
    return (m.group(1), m.group(2)) if m else (None, None)

def continues(line, prefix):
    p, text = prefix_of(line)
    return p == prefix and text is not None and not re.match(r"^([-*] |\d+\. |#|//|\"\"\"|$)", text)

changed = {i for i in range(min(len(orig), len(lines))) if orig[i] != lines[i]}
i = 0
while i < len(lines):
    if i not in changed or len(lines[i]) <= LIMIT or lines[i].rstrip().endswith("----"):  # banners stay
        i += 1
        continue
    m = re.match(r"^(\s*)(\S.*?)(\s{2,}//\s.*)$", lines[i])
    if m and not m.group(2).startswith("//"):  # trailing comment: move it above the code
        indent = m.group(1)
        lines[i:i + 1] = [indent + "// " + m.group(3).strip()[3:], indent + m.group(2)]
        changed = {j + 1 if j > i else j for j in changed} | {i}
        continue
    prefix, _ = prefix_of(lines[i])
    j = i
    while len(lines[j]) > LIMIT:
        head, words = lines[j], []
        while len(head) > LIMIT and " " in head[len(prefix):]:
            head, word = head.rsplit(" ", 1)
            words.insert(0, word)
        if words[0].startswith("\u00a7") and head.endswith("engine-numerics"):  # keep "name §n" whole
            head, word = head.rsplit(" ", 1)
            words.insert(0, word)
        lines[j] = head
        if j + 1 < len(lines) and continues(lines[j + 1], prefix):
            lines[j + 1] = prefix + " ".join(words) + " " + lines[j + 1][len(prefix):]
        else:
            lines.insert(j + 1, prefix + " ".join(words))
            changed = {k + 1 if k > j else k for k in changed}
        j += 1
    i = j + 1
open(new_path, "w", encoding="utf-8").write("\n".join(lines))
PY
)

status=0
changed=()
for f in "${targets[@]}"; do
  if [ "$f" = tools/train/reformer_torch.py ]; then
    program=$(printf '%s\n' "$phrases" "$context" "$python_sections" "$map" "$plain")
  else
    program=$(printf '%s\n' "$phrases" "$context" "$map" "$plain")
  fi
  tmp="$f.swap.tmp"
  sed -E "$program" "$f" > "$tmp"
  if grep -q '@@§' "$tmp"; then
    echo "unmapped SPEC section in $f (file left unchanged):" >&2
    grep -n '@@§' "$tmp" >&2
    rm -f "$tmp"
    status=1
    continue
  fi
  if cmp -s "$tmp" "$f"; then
    rm -f "$tmp"
  else
    case "$f" in *.cc|*.h|*.inc|*.cpp|*.hpp|*.py) python3 -c "$rewrap" "$f" "$tmp" ;; esac
    chmod --reference="$f" "$tmp" && mv "$tmp" "$f"
    changed+=("$f")
  fi
done
echo "swap_spec_citations: ${#changed[@]} file(s) rewritten${changed:+: ${changed[*]}}"
exit $status
