#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` CMake preset: clang, libFuzzer,
# ASan with leak detection, UBSan) and fuzzes parse_lease for SECONDS.
#
#   tests/fuzz/run.sh SECONDS
#
# The committed seed corpus (tests/fuzz/corpus) is copied to a temporary
# working corpus, so a run never grows it; a few large inputs around the
# 64 KiB bound are added to the working copy only. Exits non-zero on any
# crash, sanitizer report, leak, timeout or round-trip mismatch; the input
# that failed is printed in hex and kept under build/fuzz/artifacts/.
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 SECONDS" >&2
  exit 2
fi
seconds=$1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

fuzzer=build/fuzz/tests/fuzz/fuzz_parse_lease
artifacts="$root/build/fuzz/artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/lockfile-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
cp tests/fuzz/corpus/* "$work/corpus/"

export ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
common=(-max_len=70000 -detect_leaks=1 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/")
status=0

# 1. Inputs around the 64 KiB bound, run once: records of exactly 64 KiB
#    (valid) and 64 KiB + 1 (oversized), and one whose escapes grow past
#    64 KiB when re-formatted. Seeded into the fuzzing corpus they would cut
#    its speed tenfold (libFuzzer would mutate 64 KiB inputs from the start).
mkdir -p "$work/large"
head_part='{"version":1,"ownerID":"big","pid":1,"lastHeartbeatUnixNano":1,"pad":"'
tail_part='"}'
pad=$((65536 - ${#head_part} - ${#tail_part}))
{ printf '%s' "$head_part"; head -c "$pad" /dev/zero | tr '\0' 'x'; printf '%s' "$tail_part"; } \
  >"$work/large/64KiB"
{ cat "$work/large/64KiB"; printf '\n'; } >"$work/large/64KiB_plus_1"
{ printf '{"version":1,"ownerID":"'; for ((i = 0; i < 2000; ++i)); do printf '\\b\\f\\b\\f\\b\\f'; done
  printf '","pid":1,"lastHeartbeatUnixNano":1}\n'; } >"$work/large/escapes_grow"
echo "running parse_lease on $(find "$work/large" -type f | wc -l) inputs around the 64 KiB bound"
if ! "$fuzzer" "${common[@]}" "$work/large"/*; then
  status=1
  cp "$work/large"/* "$artifacts/"
  echo "one of the inputs around the 64 KiB bound failed; they are kept in build/fuzz/artifacts/" >&2
fi

# 2. Fuzzing, from the seed corpus.
if ((status == 0)); then
  echo "fuzzing parse_lease for ${seconds}s (working corpus: $work/corpus)"
  "$fuzzer" "$work/corpus" "${common[@]}" \
    -max_total_time="$seconds" \
    -dict=tests/fuzz/lease.dict \
    -print_final_stats=1 || status=$?
fi

shopt -s nullglob
found=("$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*)
for artifact in "${found[@]}"; do
  name=$(basename "$artifact")
  cp "$artifact" "$artifacts/$name"
  echo "---- $name ($(wc -c <"$artifact") bytes), kept as build/fuzz/artifacts/$name; first 512 bytes:"
  head -c 512 "$artifact" | od -A d -t x1z -v
done

if ((status != 0)); then
  echo "fuzz_parse_lease FAILED (exit status $status)" >&2
  exit "$status"
fi
if ((${#found[@]})); then
  echo "fuzz_parse_lease FAILED: it left ${#found[@]} artifact(s)" >&2
  exit 1
fi
echo "fuzz_parse_lease: OK"
