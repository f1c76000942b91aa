#!/usr/bin/env bash
# Model-checks tests/model/lockfile.pml with spin:
#   1. the protocol as implemented: an exhaustive search (3 processes) must
#      find no error -- no assertion violation, no invalid end state, and
#      the search must complete;
#   2. the naive reclaim (-DNAIVE: compare, then unlink, without the flock):
#      spin must find a counterexample and write a trail, so the model is
#      known to be able to fail.
# Usage: check.sh [WORK_DIR]   (default: the current directory; pan writes
# its files into WORK_DIR/real and WORK_DIR/naive).
# Exit status: 0 when both hold, 1 when not, 77 when spin is not installed.
# Environment: CC (default gcc, else cc) compiles pan.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model="$here/lockfile.pml"
work=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)

if ! command -v spin >/dev/null 2>&1; then
  echo "spin not installed: model check skipped"
  exit 77
fi
cc=${CC:-}
if [[ -z $cc ]]; then
  if command -v gcc >/dev/null 2>&1; then cc=gcc; else cc=cc; fi
fi

now() { date +%s.%N; }
started=$(now)
status=0

# Modest resources: the machine is shared. The real search needs ~350 MB
# with -DCOLLAPSE; MEMLIM stops pan (search not completed) well before 2 GB.
common=(-O2 -w -DSAFETY -DMEMLIM=2048)

# run_pan NAME SPIN_FLAGS CC_FLAGS PAN_FLAGS: fresh directory, spin -a,
# compile, run; pan's output goes to NAME/pan.out.
run_pan() {
  local name=$1 spin_flags=$2 cc_flags=$3 pan_flags=$4
  local dir="$work/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$model" "$dir/lockfile.pml"
  (
    cd "$dir"
    # shellcheck disable=SC2086
    spin $spin_flags -a lockfile.pml >spin.out 2>&1 || { cat spin.out; exit 1; }
    # shellcheck disable=SC2086
    "$cc" "${common[@]}" $cc_flags -o pan pan.c >cc.out 2>&1 || { cat cc.out; exit 1; }
    # shellcheck disable=SC2086
    ./pan $pan_flags >pan.out 2>&1 || true
  )
}

figures() {  # states, depth, time, memory from a pan.out
  local out=$1
  local states depth elapsed memory
  states=$(awk '/states, stored/ {print $1; exit}' "$out")
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | head -n1)
  elapsed=$(sed -n 's/^pan: elapsed time \([0-9.e+]*\) seconds.*/\1/p' "$out" | head -n1)
  memory=$(awk '/total actual memory usage/ {print $1; exit}' "$out")
  echo "states stored: ${states:-?}, depth reached: ${depth:-?}, pan time: ${elapsed:-?} s, memory: ${memory:-?} MB"
}

errors_of() { sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$1" | tail -n1; }

# --- 1. the protocol as implemented -------------------------------------------
echo "== lockfile.pml (flock, as implemented): exhaustive search, 3 processes"
run_pan real "" "-DCOLLAPSE" "-m10000"
out="$work/real/pan.out"
errors=$(errors_of "$out")
if [[ ${errors:-x} == 0 ]] && ! grep -qE 'Search not completed|MEMLIM bound|max search depth too small' "$out"; then
  echo "verified: errors: 0"
else
  echo "FAILED: errors: ${errors:-?}"
  grep -E 'violated|^pan:.*invalid end state|Search not completed|MEMLIM bound|max search depth' "$out" || true
  if [[ -f $work/real/lockfile.pml.trail ]]; then
    echo "-- counterexample (spin -t):"
    (cd "$work/real" && spin -t lockfile.pml | sed -n 's/^ *MSC: /  /p; /Error\|failed assertion/p')
  fi
  status=1
fi
echo "   $(figures "$out")"

# --- 2. the naive reclaim: compare, then unlink, no flock -----------------------
# -DREACH with -i: iteratively look for the shortest counterexample.
echo "== lockfile.pml -DNAIVE (no flock in the reclaim): spin must find a counterexample"
run_pan naive "-DNAIVE" "-DREACH" "-m10000 -i"
out="$work/naive/pan.out"
errors=$(errors_of "$out")
trail="$work/naive/lockfile.pml.trail"
if [[ ${errors:-0} -ge 1 && -f $trail ]]; then
  violated=$(grep 'assertion violated' "$out" | tail -n1 | sed 's/^pan:[0-9]*: //')
  (cd "$work/naive" && spin -DNAIVE -t lockfile.pml >counterexample.txt 2>&1 &&
    spin -DNAIVE -t -p lockfile.pml >counterexample-steps.txt 2>&1) || true
  echo "counterexample found (as expected): errors: $errors"
  echo "   violated: $violated"
  echo "   shortest interleaving (spin -t; full trail: $work/naive/counterexample-steps.txt):"
  sed -n 's/^ *MSC: /     /p' "$work/naive/counterexample.txt"
else
  echo "FAILED: spin found no counterexample in the naive variant (errors: ${errors:-?})"
  status=1
fi
echo "   $(figures "$out")"

elapsed=$(awk -v a="$started" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
if ((status == 0)); then
  echo "model check OK (${elapsed} s)"
else
  echo "model check FAILED (${elapsed} s)"
fi
exit "$status"
