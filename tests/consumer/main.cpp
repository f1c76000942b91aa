// The consumer test program: a project that uses lockfile the way a user
// would (see CMakeLists.txt here and run.cmake). It exits 0 only when every
// step below went as expected, so a package that compiles but misbehaves
// still fails the test.
//
// Compile definitions the build may pass (all optional):
//   LOCKFILE_CONSUMER_MODE      how lockfile was consumed, e.g. "find_package"
//   LOCKFILE_CONSUMER_EXPECTED_VERSION
//                               the version the build system reported
//                               (CMake package version, pkg-config
//                               --modversion, the subproject's
//                               PROJECT_VERSION); must equal LOCKFILE_VERSION.
#include <lockfile/lockfile.hpp>

#include <stdlib.h>  // mkdtemp
#include <unistd.h>  // getpid

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#ifndef LOCKFILE_CONSUMER_MODE
#define LOCKFILE_CONSUMER_MODE "unknown"
#endif

namespace {

namespace fs = std::filesystem;

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "lockfile_consumer: FAILED: %s\n", what);
    ++failures;
  }
}

int run(const fs::path& dir) {
  const fs::path path = dir / "consumer.lock";
  lockfile::PIDLock lock(path);
  check(!lock.held(), "a new PIDLock is not held");
  check(lockfile::inspect(path).state == lockfile::LockState::free, "inspect() before acquire: free");

  lock.acquire();
  check(lock.held(), "held() after acquire()");
  check(fs::exists(path), "the lock file exists while held");

  const lockfile::LockStatus status = lock.inspect();
  check(status.state == lockfile::LockState::held, "lock.inspect() while held: held");
  check(status.lease.has_value(), "lock.inspect() while held: a valid lease record");
  check(status.lease && status.lease->pid == static_cast<int>(::getpid()),
        "the lease names this process");
  check(lockfile::inspect(path).state == lockfile::LockState::held, "inspect(path) while held: held");

  // A second lock on the same file, from this (live) process, must not get it.
  lockfile::PIDLock other(path);
  check(!other.try_lock(), "a second PIDLock cannot take a held lock");
  std::error_code ec;
  other.acquire(ec);
  check(ec == lockfile::errc::lock_held, "acquire(ec) on a held lock reports errc::lock_held");

  lock.release();
  check(!lock.held(), "not held after release()");
  check(!fs::exists(path), "release() removes the lock file");
  check(lockfile::inspect(path).state == lockfile::LockState::free, "inspect() after release: free");

  check(other.try_lock(), "the second PIDLock takes the lock once it is free");
  other.release();
  return failures;
}

}  // namespace

int main() {
  std::string pattern = (fs::temp_directory_path() / "lockfile-consumer-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("lockfile_consumer: mkdtemp");
    return 1;
  }
  const fs::path dir = pattern;
  try {
    run(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockfile_consumer: FAILED: exception: %s\n", e.what());
    ++failures;
  }
  std::error_code ignored;
  fs::remove_all(dir, ignored);

#ifdef LOCKFILE_CONSUMER_EXPECTED_VERSION
  check(std::string_view(LOCKFILE_VERSION) == LOCKFILE_CONSUMER_EXPECTED_VERSION,
        "LOCKFILE_VERSION equals the version the build system reported ("
        LOCKFILE_CONSUMER_EXPECTED_VERSION ")");
#endif

  std::printf("lockfile %s via %s: %s\n", LOCKFILE_VERSION, LOCKFILE_CONSUMER_MODE,
              failures == 0 ? "OK" : "FAILED");
  return failures == 0 ? 0 : 1;
}
