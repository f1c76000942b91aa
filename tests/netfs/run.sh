#!/usr/bin/env bash
# The network file-system lane: mounts one directory twice with bindfs (FUSE)
# and runs the two-mount tests against the two views. Two FUSE mounts share
# files but not flocks, and both take the library's network path, like two
# hosts on one NFS export.
#
#   tests/netfs/run.sh TEST_BINARY [catch2 arguments...]
#
# It runs any command with the two views in its environment (see
# tests/netfs/test_two_mounts.cpp); .ci/run runs the torture test that way.
#
# Exits 77 (CTest: skipped) with the reason when it cannot run here: no
# /dev/fuse, no bindfs (apt-get install bindfs), or mounting is not permitted
# (1 instead when LOCKFILE_NETFS_REQUIRE is set, as .ci/run does).
# attr_timeout=30 makes each mount cache attributes like an NFS client.
set -uo pipefail

tests=${1:?usage: run.sh TEST_BINARY [catch2 arguments...]}
shift
skip() {
  echo "network file-system lane SKIPPED: $*"
  # CI sets this where FUSE exists: there a skip is a failure.
  [[ -z ${LOCKFILE_NETFS_REQUIRE:-} ]] || exit 1
  exit 77
}
[[ -e /dev/fuse ]] || skip "no /dev/fuse on this machine"
command -v bindfs >/dev/null || skip "bindfs is not installed (apt-get install bindfs)"

root=$(mktemp -d "${TMPDIR:-/tmp}/lockfile-netfs-XXXXXX")
mounted=()
cleanup() {
  for m in "${mounted[@]}"; do
    fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m"
  done
  rm -rf "$root"
}
trap cleanup EXIT
mkdir -p "$root/real" "$root/a" "$root/b"
for view in a b; do
  bindfs -o attr_timeout=30 "$root/real" "$root/$view" 2>"$root/mount.err" || skip "cannot mount bindfs here: $(tr '\n' ' ' <"$root/mount.err")"
  mounted+=("$root/$view")
done

LOCKFILE_NETFS_REAL="$root/real" LOCKFILE_NETFS_A="$root/a" LOCKFILE_NETFS_B="$root/b" "$tests" "$@"
