#!/usr/bin/env bash
# Runs clang-tidy (the .clang-tidy at the repository root) on the header,
# through tests/tidy/header_tu.cpp, as C++20 with the compiler's warnings
# on, with the Linux extras and without. Fails on any finding, any compiler
# warning and any error.
#
#   tests/tidy/run.sh            CLANG_TIDY=clang-tidy-14 tests/tidy/run.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

tidy=${CLANG_TIDY:-}
if [[ -z $tidy ]]; then
  for candidate in clang-tidy clang-tidy-14; do
    if command -v "$candidate" >/dev/null; then tidy=$candidate; break; fi
  done
fi
if [[ -z $tidy ]]; then
  echo "tests/tidy/run.sh: clang-tidy not found (apt-get install clang-tidy)" >&2
  exit 1
fi
"$tidy" --version | grep -i version | head -n1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Twice: with the Linux extras, and with them off (-DLOCKFILE_PORTABLE_POSIX,
# the code macOS and the BSDs compile).
for mode in linux portable; do
  defines=()
  if [[ $mode == portable ]]; then defines=(-DLOCKFILE_PORTABLE_POSIX); fi
  status=0
  "$tidy" --quiet --warnings-as-errors='*' tests/tidy/header_tu.cpp -- \
    -x c++ -std=c++20 "-I$root/include" -pthread -Wall -Wextra -Wpedantic "${defines[@]}" >"$log" 2>&1 || status=$?
  cat "$log"
  if ((status != 0)) || grep -qE '(warning|error):' "$log"; then
    echo "clang-tidy ($mode path): FAILED (exit status $status)" >&2
    exit 1
  fi
  echo "clang-tidy: the header is clean ($mode path)"
done
