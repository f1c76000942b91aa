#!/usr/bin/env bash
# Runs every lockfile benchmark and prints the results as markdown (issue #7).
#
#   tests/bench/run.sh [BUILD_DIR] [--quick] [--build] [--dir DIR]
#
# BUILD_DIR   where the bench_* programs were built (default: build/release,
#             i.e. `cmake --preset release`; a Debug build gives Debug figures)
# --quick     few iterations, short runs: a smoke check in under a minute
#             (the figures are then noisy)
# --build     build the four bench targets first (-j1)
# --dir DIR   where the lock files live (default: $TMPDIR or /tmp); the file
#             system matters, and is printed
#
# Every table compares with a floor measured in the same run. System call
# counts come from strace when it is installed (apt-get install strace);
# without it the script says what the code implies instead. A full run takes
# about a minute and a half on 2 cores.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir="$repo/build/release"
quick=0
build=0
bench_parent=${TMPDIR:-/tmp}
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --build) build=1 ;;
    --dir)
      (($# >= 2)) || { echo "run.sh: --dir needs a directory" >&2; exit 2; }
      bench_parent=$2
      shift ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) build_dir=$1 ;;
  esac
  shift
done
bench_bin="$build_dir/tests/bench"
[[ -d $bench_parent ]] || { echo "run.sh: no directory $bench_parent" >&2; exit 2; }

if ((build)); then
  cmake --build "$build_dir" -j1 --target bench_floors bench_contended bench_takeover bench_waiting >&2
fi
for program in bench_floors bench_contended bench_takeover bench_waiting; do
  [[ -x $bench_bin/$program ]] || {
    echo "run.sh: $bench_bin/$program is missing; build it first:" >&2
    echo "  cmake --preset release && cmake --build build/release -j1 --target $program   (or pass --build)" >&2
    exit 1
  }
done

if ((quick)); then
  floors_iterations=2000 syscall_cycles=200 contended_seconds=0.5
  takeover_iterations=20 cross_iterations=2 waiting_iterations=200 waiting_seconds=1 hold_seconds=1.5
else
  floors_iterations=20000 syscall_cycles=2000 contended_seconds=3
  takeover_iterations=200 cross_iterations=5 waiting_iterations=2000 waiting_seconds=5 hold_seconds=3
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/lockfile-bench-run-XXXXXX")
# The programs make their directories in here: an interrupted run leaves
# nothing behind (the programs clean up only when they end by themselves).
bench_dir=$(mktemp -d "$bench_parent/lockfile-bench-XXXXXX")
trap 'rm -rf "$scratch" "$bench_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- header -----------------------------------------------------------------
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $cpu ]] || cpu=$(uname -m)
if command -v findmnt > /dev/null; then
  fs=$(findmnt -n -o FSTYPE,SOURCE --target "$bench_parent" | awk '{ print $1 " on " $2 }')
else
  fs=$(stat -f -c %T "$bench_parent")
fi
version=$(sed -n 's/^#define LOCKFILE_VERSION "\(.*\)"/\1/p' "$repo/include/lockfile/lockfile.hpp")
commit=$(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo unknown)
if ! git -C "$repo" diff --quiet HEAD -- include 2> /dev/null; then
  commit="$commit + uncommitted changes to include/"
fi
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt" 2> /dev/null || true)
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_dir/CMakeCache.txt" 2> /dev/null || true)

echo "# lockfile benchmarks"
echo
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- Machine: $cpu, $(nproc) cores, Linux $(uname -r)"
echo "- Bench directory: $bench_parent ($fs)"
echo "- lockfile $version (commit $commit), ${compiler:-unknown compiler} ${build_type:-unknown build type}, $build_dir"
echo "- Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
((quick)) && echo "- **--quick**: few iterations; a smoke check, not figures to quote"
echo

# --- uncontended ------------------------------------------------------------
echo "## Uncontended acquire + release"
echo
"$bench_bin/bench_floors" --iterations "$floors_iterations" --dir "$bench_dir"
echo

# System calls per cycle: strace -f -c over N cycles minus over 0 cycles
# (start-up, the untimed first cycle and thread creation cancel out).
strace_counts() { # out_file program args...: per-syscall call counts, "name count" lines
  local out=$1
  shift
  strace -f -c -o "$scratch/strace.txt" "$@" > /dev/null
  awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $NF, $4 }' "$scratch/strace.txt" > "$out"
}

echo "### System calls per acquire + release"
echo
if command -v strace > /dev/null; then
  for row in pidlock link; do
    strace_counts "$scratch/$row.n" "$bench_bin/bench_floors" --syscalls "$syscall_cycles" --only "$row" --dir "$bench_dir"
    strace_counts "$scratch/$row.0" "$bench_bin/bench_floors" --syscalls 0 --only "$row" --dir "$bench_dir"
  done
  echo "Counted with \`strace -f -c\` (all threads) over $syscall_cycles cycles, minus a run of 0 cycles, divided by $syscall_cycles."
  echo "Fractions are wake-ups of other threads that do not happen on every cycle (and strace's slowdown changes how often they happen)."
  echo
  awk -v n="$syscall_cycles" '
    FNR == 1 { file++ }
    file == 1 { pid_n[$1] = $2; names[$1] = 1 }
    file == 2 { pid_0[$1] = $2; names[$1] = 1 }
    file == 3 { link_n[$1] = $2; names[$1] = 1 }
    file == 4 { link_0[$1] = $2; names[$1] = 1 }
    END {
      print "| system call | PIDLock acquire() + release() | link floor |"
      print "|---|---|---|"
      count = 0
      for (name in names) {
        p = (pid_n[name] - pid_0[name]) / n
        l = (link_n[name] - link_0[name]) / n
        if (p < 0.005 && l < 0.005) continue
        rows[++count] = sprintf("%012.4f|%s", p, name)
        per_pid[name] = p; per_link[name] = l
        total_p += p; total_l += l
      }
      # sort by the PIDLock count, largest first (insertion sort: few rows)
      for (i = 2; i <= count; i++) {
        v = rows[i]
        for (j = i - 1; j >= 1 && rows[j] < v; j--) rows[j + 1] = rows[j]
        rows[j + 1] = v
      }
      for (i = 1; i <= count; i++) {
        split(rows[i], f, "|")
        printf "| %s | %.2f | %.2f |\n", f[2], per_pid[f[2]], per_link[f[2]]
      }
      printf "| **total** | **%.2f** | **%.2f** |\n", total_p, total_l
    }' "$scratch/pidlock.n" "$scratch/pidlock.0" "$scratch/link.n" "$scratch/link.0"
else
  echo "strace not installed: not counted. By reading the code: the link floor makes 6 (openat, write, close, link, unlink, unlink);"
  echo "PIDLock makes an O_TMPFILE openat, pwrite64, linkat, fstat, a wake-up of the heartbeat thread (futex), and on release"
  echo "flock, lstat, pread64, unlink, flock(LOCK_UN) and close, plus getpid calls."
fi
echo

# --- contended --------------------------------------------------------------
echo "## Contended throughput and fairness"
echo
"$bench_bin/bench_contended" --seconds "$contended_seconds" --dir "$bench_dir"
echo

# --- crash takeover ---------------------------------------------------------
echo "## Crash takeover"
echo
"$bench_bin/bench_takeover" --iterations "$takeover_iterations" --cross-iterations "$cross_iterations" \
  --dir "$bench_dir"
echo

# --- handoff and renewal ----------------------------------------------------
echo "## Handoff to a waiter, and renewal CPU"
echo
"$bench_bin/bench_waiting" --iterations "$waiting_iterations" --seconds "$waiting_seconds" --dir "$bench_dir" \
  | tee "$scratch/waiting.out"
echo
# bench_waiting prints no ratio; its two handoff rows give one.
awk -F'|' '
  /kernel floor/ { floor = $3 + 0 }
  /PIDLock::lock\(\)/ { lock = $3 + 0 }
  END { if (floor > 0 && lock > 0) printf "Handoff median: PIDLock %.1f× the flock floor.\n", lock / floor }
' "$scratch/waiting.out"
echo

# Renewal system calls: trace each thread into its own file (strace -ff),
# take the heartbeat thread's (bench_floors --hold-seconds names it), and
# count what it does between its first and last pwrite64 (the heartbeat's
# write): the steady state, without thread start-up and shutdown.
echo "### Renewal system calls per heartbeat"
echo
if command -v strace > /dev/null; then
  echo "Counted with \`strace -ff\` on the thread named \`lockfile-renew\` of a process holding K locks for $hold_seconds s"
  echo "(heartbeat every 250 ms), between its first and last pwrite64. Per lock renewal:"
  echo
  echo "| held locks | renewals counted | system calls per renewal | total |"
  echo "|---|---|---|---|"
  for locks in 1 100; do
    rm -f "$scratch"/hb.*
    strace -ff -o "$scratch/hb" "$bench_bin/bench_floors" --hold-seconds "$hold_seconds" --locks "$locks" \
      --dir "$bench_dir" > "$scratch/hold.out"
    tid=$(awk -F'\t' '$1 == "renew_tid" { print $2 }' "$scratch/hold.out")
    [[ -n $tid && -f $scratch/hb.$tid ]] || { echo "run.sh: no trace of the renewal thread" >&2; exit 1; }
    awk -v locks="$locks" '
      { name = $0; sub(/\(.*/, "", name) }
      name !~ /^[a-z0-9_]+$/ { next }   # signals, exit lines, resumptions
      { line[NR] = name }
      name == "pwrite64" { if (!first) first = NR; last = NR; writes++ }
      END {
        if (writes < 2) { print "| " locks " | too few heartbeats seen | | |"; exit }
        renewals = writes - 1
        for (i = first + 1; i <= last; i++) if (i in line) count[line[i]]++
        text = ""; total = 0
        n = 0
        for (c in count) order[++n] = c
        for (i = 2; i <= n; i++) { v = order[i]; for (j = i - 1; j >= 1 && order[j] > v; j--) order[j + 1] = order[j]; order[j + 1] = v }
        for (i = 1; i <= n; i++) {
          c = order[i]
          text = text (text == "" ? "" : ", ") sprintf("%s %.2f", c, count[c] / renewals)
          total += count[c] / renewals
        }
        printf "| %d | %d | %s | %.2f |\n", locks, renewals, text, total
      }' "$scratch/hb.$tid"
  done
  echo
  echo "(newfstatat is glibc's lstat. futex: the thread's timed sleep on its condition variable (FUTEX_WAIT_BITSET), and"
  echo "a FUTEX_WAKE that wakes nobody on the way out of it: glibc re-takes a condition variable's mutex marked contended.)"
else
  echo "strace not installed: by reasoning, 3 (lstat, pread64, pwrite64) per heartbeat, plus one timed sleep (futex) per batch of due locks."
fi
echo
echo "Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
