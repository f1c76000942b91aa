#!/usr/bin/env bash
# Pastes the README's marked blocks, in order, as a new user would, and
# checks what they print, so that the README cannot drift from the code.
#
#   tests/readme/paste.sh [--list] [README]
#
# A block is tested when the line before its opening fence is one of:
#   <!-- paste: sh NAME -->            run in a fresh bash (no rc files), fed
#                                      on stdin as if pasted, from the
#                                      repository's root
#   <!-- paste: cpp NAME -->           a whole program: compiled with
#                                      ${CXX:-c++} -std=c++20 -Wall -Wextra
#                                      -Wpedantic -Werror -pthread against
#                                      include/, then run
#   <!-- paste: cpp-fragment NAME -->  statements: compiled inside main()
#                                      with the header included; not run
# A block may be followed (after blank lines at most) by
#   <!-- output -->
# and a fenced block: what the pasted block must print (stdout and stderr,
# as a terminal shows them). In it, "..." stands for any text within a line.
# Without one, the block must only succeed (exit 0).
#
# The shell blocks find `lockrun` on PATH when LOCKFILE_PASTE_PATH names a
# directory to put first (.ci/run passes the one it installed to).
set -uo pipefail

list=false
if [[ ${1:-} == --list ]]; then list=true; shift; fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readme=${1:-$root/README.md}
work=$(mktemp -d "${TMPDIR:-/tmp}/lockfile-paste-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Splits the README into work/NN.KIND.NAME (the block) and work/NN.expected.
awk -v dir="$work" '
  function flush_name() { return sprintf("%s/%02d", dir, count) }
  /^<!-- paste: [a-z-]+ [A-Za-z0-9_.-]+ -->$/ && !in_block {
    split($0, f, " "); kind = f[3]; name = f[4]; pending = 1; next
  }
  /^<!-- output -->$/ && !in_block { want_output = 1; next }
  /^```/ {
    if (in_block) { in_block = 0; close(target); next }
    if (pending) {
      count++; target = flush_name() "." kind "." name; in_block = 1; pending = 0
      printf "" > target; next
    }
    if (want_output) {
      target = flush_name() ".expected"; in_block = 1; want_output = 0
      printf "" > target; next
    }
    next
  }
  in_block { print > target; next }
  NF > 0 { pending = 0; want_output = 0 }
' "$readme"

shopt -s nullglob
blocks=("$work"/[0-9][0-9].*.*)
if ((${#blocks[@]} == 0)); then
  echo "paste: no marked blocks in $readme" >&2
  exit 1
fi
if $list; then
  for block in "${blocks[@]}"; do basename "$block"; done
  exit 0
fi

# Does `actual` match `expected` line by line, "..." matching any text?
matches() {
  local -a want got
  mapfile -t want <"$1"
  mapfile -t got <"$2"
  ((${#want[@]} == ${#got[@]})) || return 1
  local i pattern
  for i in "${!want[@]}"; do
    pattern=$(printf '%s' "${want[i]}" | sed 's/[][*?\\]/\\&/g; s/\.\.\./*/g')
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    [[ ${got[i]} == $pattern ]] || return 1
  done
}

cxx=${CXX:-c++}
failed=0
for block in "${blocks[@]}"; do
  leaf=$(basename "$block")
  number=${leaf%%.*}
  rest=${leaf#*.}
  kind=${rest%%.*}
  name=${rest#*.}
  expected="$work/$number.expected"
  actual="$work/$number.actual"
  case $kind in
    sh)
      (cd "$root" && env PATH="${LOCKFILE_PASTE_PATH:+$LOCKFILE_PASTE_PATH:}$PATH" HOME="$HOME" \
        bash --noprofile --norc -s <"$block" >"$actual" 2>&1)
      status=$?
      ;;
    cpp | cpp-fragment)
      source_file="$work/$number.cpp"
      if [[ $kind == cpp ]]; then
        cp "$block" "$source_file"
      else
        { echo '#include <lockfile/lockfile.hpp>'; echo 'int main() {'; cat "$block"; echo '}'; } >"$source_file"
      fi
      "$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror -Wno-unused -pthread -I"$root/include" \
        "$source_file" -o "$work/$number.program" >"$actual" 2>&1
      status=$?
      if ((status == 0)) && [[ $kind == cpp ]]; then
        (cd "$work" && "./$number.program" >"$actual" 2>&1)
        status=$?
      fi
      ;;
    *)
      echo "paste: $name: unknown kind '$kind'" >&2
      failed=1
      continue
      ;;
  esac
  if [[ -e $expected ]]; then
    if matches "$expected" "$actual"; then
      echo "paste: $name ($kind): ok"
      continue
    fi
    echo "paste: $name ($kind): output differs (exit $status); expected:"
    sed 's/^/    /' "$expected"
    echo "  got:"
    sed 's/^/    /' "$actual"
    failed=1
  elif ((status == 0)); then
    echo "paste: $name ($kind): ok"
  else
    echo "paste: $name ($kind): failed with exit $status:"
    sed 's/^/    /' "$actual"
    failed=1
  fi
done
exit $failed
