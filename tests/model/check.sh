#!/usr/bin/env bash
# Model-checks tests/model/lockfile.pml and tests/model/fencing.pml with spin:
#   1. lockfile.pml, the protocol as implemented: an exhaustive search (3
#      processes) must find no error -- no assertion violation, no invalid
#      end state, and the search must complete;
#   2. the naive reclaim (-DNAIVE: compare, then unlink, without the flock):
#      spin must find a counterexample and write a trail, so the model is
#      known to be able to fail;
#   3. fencing.pml, the fencing tokens as implemented, with the lock, and
#      without it (-DLOCKLESS, create_next_generation alone), and without the
#      listing after the creation (-DNO_RELIST, which the lock makes
#      unnecessary; fencing.pml says why): exhaustive searches (3 processes)
#      must find no error;
#   4. the variants that must break a property of fencing.pml: a counter
#      (-DCOUNTER: unique), the ownership check first (-DCHECK_FIRST:
#      fencing), no listing after the creation without the lock (-DLOCKLESS
#      -DNO_RELIST: unique). spin must find a counterexample to that
#      property and write a trail.
# Usage: check.sh [WORK_DIR]   (default: the current directory; pan writes
# its files into WORK_DIR/real, WORK_DIR/naive and WORK_DIR/fencing-*).
# Exit status: 0 when all hold, 1 when not, 77 when spin is not installed.
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
# (fencing.pml's runs set their own MEMLIM.)
common=(-O2 -w -DSAFETY)
lockfile_memlim=-DMEMLIM=2048

# run_pan NAME SPIN_FLAGS CC_FLAGS PAN_FLAGS: fresh directory, spin -a on
# $model, compile, run; pan's output goes to NAME/pan.out.
run_pan() {
  local name=$1 spin_flags=$2 cc_flags=$3 pan_flags=$4
  local dir="$work/$name" file
  file=$(basename "$model")
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$model" "$dir/$file"
  (
    cd "$dir"
    # shellcheck disable=SC2086
    spin $spin_flags -a "$file" >spin.out 2>&1 || { cat spin.out; exit 1; }
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
run_pan real "" "-DCOLLAPSE $lockfile_memlim" "-m10000"
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
run_pan naive "-DNAIVE" "-DREACH $lockfile_memlim" "-m10000 -i"
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

# --- 3. and 4. fencing.pml: the fencing tokens ----------------------------------
# The exhaustive search with the lock needs ~820 MB with -DCOLLAPSE (~18
# million states, ~20 s); the others well under 300 MB.
model="$here/fencing.pml"
fencing_cc="-DCOLLAPSE -DMEMLIM=1024"

# The property an assertion of fencing.pml stands for.
property_of() {
  case $1 in
    *handed*) echo unique ;;
    *floor*) echo order ;;
    *lowest*) echo fencing ;;
    *) echo "?" ;;
  esac
}

# fencing_verified NAME TITLE SPIN_FLAGS: an exhaustive search must find no
# error and complete.
fencing_verified() {
  local name=$1 title=$2 spin_flags=$3
  echo "== fencing.pml${spin_flags:+ $spin_flags} ($title): exhaustive search, 3 processes"
  run_pan "$name" "$spin_flags" "$fencing_cc" "-m10000"
  local out="$work/$name/pan.out" errors
  errors=$(errors_of "$out")
  if [[ ${errors:-x} == 0 ]] && ! grep -qE 'Search not completed|MEMLIM bound|max search depth too small' "$out"; then
    echo "verified: errors: 0"
  else
    echo "FAILED: errors: ${errors:-?}"
    grep -E 'violated|^pan:.*invalid end state|Search not completed|MEMLIM bound|max search depth' "$out" || true
    if [[ -f $work/$name/fencing.pml.trail ]]; then
      echo "-- counterexample (spin -t):"
      # shellcheck disable=SC2086
      (cd "$work/$name" && spin $spin_flags -t fencing.pml | sed -n 's/^ *MSC: /  /p; /Error\|failed assertion/p')
    fi
    status=1
  fi
  echo "   $(figures "$out")"
}

# fencing_breaks NAME TITLE SPIN_FLAGS PROPERTY: spin must find a
# counterexample whose first failed assertion is PROPERTY's, and write a
# trail. -DREACH with -i: iteratively look for the shortest.
fencing_breaks() {
  local name=$1 title=$2 spin_flags=$3 expected=$4
  echo "== fencing.pml $spin_flags ($title): spin must find a counterexample to $expected"
  run_pan "$name" "$spin_flags" "$fencing_cc -DREACH" "-m10000 -i"
  local dir="$work/$name" errors violated=""
  local out="$dir/pan.out"
  errors=$(errors_of "$out")
  if [[ -f $dir/fencing.pml.trail ]]; then
    # shellcheck disable=SC2086
    (cd "$dir" && spin $spin_flags -t fencing.pml >counterexample.txt 2>&1 &&
      spin $spin_flags -t -p fencing.pml >counterexample-steps.txt 2>&1) || true
    # the trail's first failed assertion (the same step may fail more)
    violated=$(sed -n 's/^spin: text of failed assertion: //p' "$dir/counterexample.txt" | head -n1)
  fi
  if [[ ${errors:-0} -ge 1 && -n $violated && $(property_of "$violated") == "$expected" ]]; then
    echo "counterexample found (as expected): errors: $errors"
    echo "   violated: $expected: $violated"
    echo "   shortest interleaving (spin -t; full trail: $dir/counterexample-steps.txt):"
    sed -n 's/^ *MSC: /     /p' "$dir/counterexample.txt"
  else
    echo "FAILED: no counterexample to $expected (errors: ${errors:-?}; first failed assertion: ${violated:-none})"
    status=1
  fi
  echo "   $(figures "$out")"
}

fencing_verified fencing-real "as implemented" ""
fencing_verified fencing-lockless "create_next_generation alone" "-DLOCKLESS"
fencing_verified fencing-no-relist "no step 3: the lock serializes the creators" "-DNO_RELIST"
fencing_breaks fencing-counter "a read-then-write counter" "-DCOUNTER" unique
fencing_breaks fencing-check-first "the ownership check before the creation" "-DCHECK_FIRST" fencing
fencing_breaks fencing-lockless-no-relist "no step 3, no lock" "-DLOCKLESS -DNO_RELIST" unique

elapsed=$(awk -v a="$started" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
if ((status == 0)); then
  echo "model check OK (${elapsed} s)"
else
  echo "model check FAILED (${elapsed} s)"
fi
exit "$status"
