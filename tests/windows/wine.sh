#!/bin/sh
# CMAKE_CROSSCOMPILING_EMULATOR of the windows-wine preset: runs one Windows
# program under wine, in the suite's own prefix, without wine's debug chatter.
# (`prefix` as the first argument makes the prefix and starts a wineserver
# that stays up across the tests, `stop` ends it: CTest fixtures call both.)
set -eu
# The build directory's own prefix (tests/windows/CMakeLists.txt sets it).
export WINEPREFIX="${LOCKFILE_WINEPREFIX:-${TMPDIR:-/tmp}/lockfile-wine}"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="  # no Mono or Gecko install prompts
case "${1:-}" in
  prefix)
    mkdir -p "$WINEPREFIX"
    # Persistent while the suite runs (-p: until killed), booted before the
    # first test: a test that waits for the first boot can hit its timeout.
    wineserver -p </dev/null >/dev/null 2>&1
    wine wineboot --init </dev/null >/dev/null 2>&1 || true
    # Drive N: is a directory of the prefix that wine reports as a network
    # drive (GetDriveTypeW: DRIVE_REMOTE), so that the network path (claims)
    # runs here too. The drive type is read when the server starts: once
    # set, the server is started again.
    if [ ! -e "$WINEPREFIX/dosdevices/n:" ]; then
      mkdir -p "$WINEPREFIX/network-drive"
      ln -sfn "$WINEPREFIX/network-drive" "$WINEPREFIX/dosdevices/n:"
      wine reg add 'HKLM\Software\Wine\Drives' /v n: /d network /f </dev/null >/dev/null 2>&1 || true
      wineserver -k 2>/dev/null || true
      wineserver -w 2>/dev/null || true
      wineserver -p </dev/null >/dev/null 2>&1
      wine wineboot </dev/null >/dev/null 2>&1 || true
    fi
    exit 0 ;;
  stop)
    wineserver -k 2>/dev/null || true
    exit 0 ;;
esac
exec wine "$@"
