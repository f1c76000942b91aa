#!/usr/bin/env bash
# The file-system matrix: runs the test suite (multi-process tests included)
# and a short torture run on each file system this machine can mount, and
# prints one markdown table row per file system.
#
#   tests/fsmatrix/run.sh BUILD_DIR [TORTURE_SECONDS]     (root; e.g. build/gcc, 10)
#
# tmpfs, and ext4, xfs and btrfs on loop images, overlayfs, and a FUSE
# pass-through (bindfs) where /dev/fuse exists. A file system that cannot be
# mounted here (no root, no loop devices, no mkfs tool) gets a row saying so.
# Needs: xfsprogs, btrfs-progs, bindfs (apt-get install them first).
set -uo pipefail

build=${1:?usage: run.sh BUILD_DIR [TORTURE_SECONDS]}
seconds=${2:-10}
tests="$build/tests/lockfile_tests"
torture="$build/tests/stress/torture"
[[ -x $tests && -x $torture ]] || { echo "build $build first (lockfile_tests, torture)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "the matrix needs root (mounts); skipping" >&2; exit 0; }

root=$(mktemp -d /tmp/lockfile-fsmatrix-XXXXXX)
chmod 755 "$root"  # the tests that drop to an unprivileged user must reach it
mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null; done
  rm -rf "$root"
}
trap cleanup EXIT

# mount_fs NAME: mounts it and sets $dir, or fails with the reason on stderr.
# (Not called in a $(...) subshell: the mounts list must reach cleanup.)
mount_fs() {
  local name=$1
  dir="$root/$1"
  mkdir -p "$dir"
  case $name in
    tmpfs) mount -t tmpfs -o size=256m tmpfs "$dir" || return 1 ;;
    ext4 | xfs | btrfs)
      local mkfs=mkfs.$name
      command -v "$mkfs" >/dev/null || { echo "no $mkfs" >&2; return 1; }
      truncate -s 400M "$root/$name.img"
      "$mkfs" -q "$root/$name.img" >/dev/null 2>&1 || "$mkfs" -f "$root/$name.img" >/dev/null 2>&1 || return 1
      mount -o loop "$root/$name.img" "$dir" || return 1 ;;
    overlayfs)
      mkdir -p "$root/ovl-lower" "$root/ovl-upper" "$root/ovl-work"
      mount -t overlay overlay -o "lowerdir=$root/ovl-lower,upperdir=$root/ovl-upper,workdir=$root/ovl-work" "$dir" || return 1 ;;
    bindfs)
      [[ -e /dev/fuse ]] || { echo "no /dev/fuse" >&2; return 1; }
      command -v bindfs >/dev/null || { echo "no bindfs" >&2; return 1; }
      mkdir -p "$root/bindfs-backing"
      bindfs -o allow_other "$root/bindfs-backing" "$dir" || return 1 ;;
  esac
  mounts+=("$dir")
}

echo "| file system | kind | test cases | torture ${seconds} s |"
echo "|---|---|---|---|"
status=0
for fs in tmpfs ext4 xfs btrfs overlayfs bindfs; do
  if ! mount_fs "$fs" 2>"$root/$fs.why"; then
    echo "| $fs | | not mounted here: $(tr '\n' ' ' <"$root/$fs.why") | |"
    continue
  fi
  kind=$(stat -f -c %T "$dir")
  # Every test uses a fresh directory under TMPDIR. lockrun and consumer
  # tests are about the tool and the build, not the file system.
  if TMPDIR=$dir "$tests" '~[lockrun]' >"$root/$fs.tests" 2>&1; then
    cases=$(grep -Eo 'All tests passed \([0-9]+ assertions in [0-9]+ test cases\)' "$root/$fs.tests" | grep -Eo '[0-9]+ test cases')
    cases="pass ($cases)"
  else
    cases="FAIL: $(grep -E '^test cases:' "$root/$fs.tests" | tail -1 || echo "no summary: killed?")"
    cp "$root/$fs.tests" "/tmp/lockfile-fsmatrix-$fs.tests.log"
    echo "$fs: test log kept in /tmp/lockfile-fsmatrix-$fs.tests.log" >&2
    status=1
  fi
  if "$torture" --seconds "$seconds" --dir "$dir" >"$root/$fs.torture" 2>&1; then
    torture_result="pass ($(grep -Eo '^cycles [0-9]+' "$root/$fs.torture"), $(grep -Eo 'unexpected [0-9]+' "$root/$fs.torture") overlaps)"
  else
    torture_result="FAIL: $(grep -E 'overlaps:|RESULT' "$root/$fs.torture" | tr '\n' ' ')"
    cp "$root/$fs.torture" "/tmp/lockfile-fsmatrix-$fs.torture.log"
    echo "$fs: torture log kept in /tmp/lockfile-fsmatrix-$fs.torture.log" >&2
    status=1
  fi
  echo "| $fs | $kind | $cases | $torture_result |"
done
exit $status
