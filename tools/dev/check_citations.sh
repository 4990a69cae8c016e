#!/usr/bin/env bash
# Fails when a file of the repository cites a document a reader of the repository cannot open:
#   - the external Reformer spec ("SPEC §n", "SPEC.md", "SPEC 7.3"): the numerics are in
#     docs/engine-numerics.md, cited as "engine-numerics §n";
#   - paths outside the tree: ../shared/..., /work/shared/..., /work/notes/...;
#   - a Markdown document named by file name ("serving.md §2", "baselines.md") that no file of the
#     repository carries.
# It also fails when a citation "engine-numerics §n" names a section that docs/engine-numerics.md
# does not have.
#
# Usage: tools/dev/check_citations.sh [source-root]   (default: the repository holding this script)
# Files: `git ls-files` when the root is a git checkout, else every regular file outside build*/ and .git/.
# Output: one "path:line: reason: text" per finding; exit 0 when there is none, 1 otherwise.
set -euo pipefail
export LC_ALL=C.UTF-8 2>/dev/null || export LC_ALL=C

root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root"
doc=docs/engine-numerics.md

# Files allowed to name the old spec: the numerics document (its citation map) and the two tools that
# exist to remove such citations.
allowed='^(docs/engine-numerics\.md|tools/dev/check_citations\.sh|tools/dev/swap_spec_citations\.sh)$'

list_files() {
  if git -C . rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files
  else
    find . -type f ! -path './.git/*' ! -path './build*' | sed 's|^\./||' | sort
  fi
}

mapfile -t files < <(list_files | grep -Ev "$allowed" | while read -r f; do
  [ -f "$f" ] && grep -Iq . "$f" 2>/dev/null && echo "$f"
done)

# Basenames of every Markdown file the repository carries.
declare -A have_md=()
while read -r f; do have_md[$(basename "$f")]=1; done < <(list_files | grep -E '\.md$' || true)

findings=0
report() {  # path line reason text
  printf '%s:%s: %s: %s\n' "$1" "$2" "$3" "$(printf '%s' "$4" | sed 's/^[[:space:]]*//' | cut -c1-160)"
  findings=$((findings + 1))
}

# 1. The external spec and paths outside the tree.
outside='(\bSPEC\b|\.\./shared/|/work/shared\b|/work/notes\b)'
if [ ${#files[@]} -gt 0 ]; then
  while IFS= read -r hit; do
    path=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
    report "$path" "$line" "cites a document outside the repository" "$text"
  done < <(grep -nHE "$outside" "${files[@]}" || true)
fi

# 2. Markdown documents named by file name that the repository does not carry. URLs are skipped
#    (public documents anyone can open), and so is third_party/: its READMEs name the upstream files
#    their material came from (sources, not citations).
own_files=()
for f in "${files[@]}"; do [[ $f == third_party/* ]] || own_files+=("$f"); done
if [ ${#own_files[@]} -gt 0 ]; then
  while IFS= read -r hit; do
    path=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
    stripped=$(printf '%s' "$text" | sed -E 's#[a-z]+://[^ )>"]*##g')
    for name in $(printf '%s' "$stripped" | grep -oE '[A-Za-z0-9_.-]+\.md\b' || true); do
      [ "$name" = ".md" ] && continue
      if [ -z "${have_md[$name]:-}" ]; then
        # Already reported by rule 1 (SPEC.md, paths outside): do not count twice.
        printf '%s' "$text" | grep -qE "$outside" && continue
        report "$path" "$line" "names $name, which the repository does not carry" "$text"
      fi
    done
  done < <(grep -nHE '[A-Za-z0-9_-]\.md\b' "${own_files[@]}" || true)
fi

# 3. Every "engine-numerics §n" names a section of docs/engine-numerics.md.
if [ -f "$doc" ]; then
  declare -A have_sec=()
  while read -r n; do have_sec[$n]=1; done < <(
    grep -E '^#{2,4} [0-9]+(\.[0-9]+)*[. ]' "$doc" | sed -E 's/^#+ ([0-9]+(\.[0-9]+)*).*/\1/')
  if [ ${#files[@]} -gt 0 ]; then
    while IFS= read -r hit; do
      path=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
      cited=${text#*engine-numerics}
      for n in $(printf '%s' "$cited" | grep -oE '§[0-9]+(\.[0-9]+)*' | sed 's/§//'); do
        [ -n "${have_sec[$n]:-}" ] || report "$path" "$line" "engine-numerics has no §$n" "$text"
      done
    done < <(grep -nHE 'engine-numerics §' "${files[@]}" || true)
  fi
elif [ ${#files[@]} -gt 0 ] && grep -qE 'engine-numerics §' "${files[@]}"; then
  report "$doc" 0 "missing" "cited as engine-numerics §n but absent"
fi

if [ "$findings" -gt 0 ]; then
  echo "FAIL: $findings citation(s) of documents outside the repository or of missing sections"
  exit 1
fi
echo "OK: every citation points inside the repository (${#files[@]} files checked)"
