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
# With the Linux extras, with them off (-DLOCKFILE_PORTABLE_POSIX, the code
# macOS and the BSDs compile), and for Windows (platform_windows.hpp, as
# clang targeting mingw-w64 sees it) where mingw-w64's headers are installed.
mingw_cxx=/usr/lib/gcc/x86_64-w64-mingw32/12-posix/include/c++
modes=(linux portable)
if [[ -d $mingw_cxx && -d /usr/share/mingw-w64/include ]]; then modes+=(windows); fi
for mode in "${modes[@]}"; do
  flags=(-pthread)
  if [[ $mode == portable ]]; then flags+=(-DLOCKFILE_PORTABLE_POSIX); fi
  if [[ $mode == windows ]]; then
    flags=(--target=x86_64-w64-mingw32 -isystem "$mingw_cxx" -isystem "$mingw_cxx/x86_64-w64-mingw32"
           -isystem /usr/share/mingw-w64/include)
  fi
  status=0
  "$tidy" --quiet --warnings-as-errors='*' tests/tidy/header_tu.cpp -- \
    -x c++ -std=c++20 "-I$root/include" -Wall -Wextra -Wpedantic "${flags[@]}" >"$log" 2>&1 || status=$?
  cat "$log"
  if ((status != 0)) || grep -qE '(warning|error):' "$log"; then
    echo "clang-tidy ($mode path): FAILED (exit status $status)" >&2
    exit 1
  fi
  echo "clang-tidy: the header is clean ($mode path)"
done
