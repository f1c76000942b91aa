// A separate program for the tests that need a real exec'd process.
//
//   lockfile_test_helper fds
//       prints, one per line, "FD DEVICE:INODE" for every descriptor it has
//       open, so a test can tell whether a lock's descriptor leaked across
//       exec. (Not the link target: an O_TMPFILE inode keeps its anonymous
//       name there even after it is linked.)
//   lockfile_test_helper hold PATH STALE_MS HEARTBEAT_MS
//       acquires PATH, prints "held PID", holds until stdin reaches end of
//       file, releases and exits 0 (2 when the lock could not be taken).
//   lockfile_test_helper hold-report PATH STALE_MS HEARTBEAT_MS
//       as hold, and prints "lost" when on_lease_lost runs; at end of file
//       on stdin prints "held=0" or "held=1", releases and exits 0.
//   lockfile_test_helper try PATH STALE_MS HEARTBEAT_MS
//       one try_lock() in a fresh process image: exits 0 when it acquired
//       (and releases), 1 when the lock is held, 2 on an error.
//   lockfile_test_helper hold-main-exits PATH STALE_MS HEARTBEAT_MS
//       as hold, but the main thread then ends with pthread_exit() while a
//       second thread waits for end of file on stdin, releases and exits 0:
//       the process lives on (and renews its lease) while /proc/PID/stat shows
//       its thread-group leader as a zombie ('Z').
//   lockfile_test_helper inspect-then-fork INSPECTED PATH
//       calls only inspect(INSPECTED), an existing lock file (no PIDLock
//       exists in this process), then forks; the child acquires PATH and prints "child PID RECORD_PID"
//       (RECORD_PID read back from the file it wrote), releases and exits 0.
//       The helper exits with the child's status.
#include <lockfile/lockfile.hpp>

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

namespace {

int list_descriptors() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 1;
  const int own = ::dirfd(dir);
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name == "." || name == ".." || std::atoi(entry->d_name) == own) continue;
    struct stat st {};
    if (::fstat(std::atoi(entry->d_name), &st) != 0) continue;
    std::printf("%s %ju:%ju\n", entry->d_name, static_cast<std::uintmax_t>(st.st_dev),
                static_cast<std::uintmax_t>(st.st_ino));
  }
  ::closedir(dir);
  return 0;
}

int hold(const char* path, long stale_ms, long heartbeat_ms) {
  lockfile::PIDLock lock(path, {.lease_heartbeat_interval = std::chrono::milliseconds(heartbeat_ms),
                                .lease_stale_threshold = std::chrono::milliseconds(stale_ms)});
  std::error_code ec;
  lock.acquire(ec);
  if (ec) {
    std::fprintf(stderr, "lockfile_test_helper: %s\n", ec.message().c_str());
    return 2;
  }
  std::printf("held %d\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  char buffer[64];
  while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
  }
  lock.release(ec);
  return ec ? 3 : 0;
}

int hold_report(const char* path, long stale_ms, long heartbeat_ms) {
  lockfile::PIDLock lock(path, {.lease_heartbeat_interval = std::chrono::milliseconds(heartbeat_ms),
                                .lease_stale_threshold = std::chrono::milliseconds(stale_ms),
                                .on_lease_lost = [] {
                                  std::printf("lost\n");
                                  std::fflush(stdout);
                                }});
  std::error_code ec;
  lock.acquire(ec);
  if (ec) return 2;
  std::printf("held %d\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  char buffer[64];
  while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
  }
  std::printf("held=%d\n", lock.held() ? 1 : 0);
  std::fflush(stdout);
  lock.release(ec);
  return 0;
}

int try_once(const char* path, long stale_ms, long heartbeat_ms) {
  lockfile::PIDLock lock(path, {.lease_heartbeat_interval = std::chrono::milliseconds(heartbeat_ms),
                                .lease_stale_threshold = std::chrono::milliseconds(stale_ms)});
  try {
    return lock.try_lock() ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockfile_test_helper: %s\n", e.what());
    return 2;
  }
}

int hold_main_exits(const char* path, long stale_ms, long heartbeat_ms) {
  // On the heap: pthread_exit() unwinds main's stack, which must not release it.
  auto* lock = new lockfile::PIDLock(
      path, {.lease_heartbeat_interval = std::chrono::milliseconds(heartbeat_ms),
             .lease_stale_threshold = std::chrono::milliseconds(stale_ms)});
  std::error_code ec;
  lock->acquire(ec);
  if (ec) {
    std::fprintf(stderr, "lockfile_test_helper: %s\n", ec.message().c_str());
    return 2;
  }
  std::thread([lock] {
    char buffer[64];
    while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
    }
    std::error_code released;
    lock->release(released);
    ::_exit(released ? 3 : 0);
  }).detach();
  std::printf("held %d\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  ::pthread_exit(nullptr);
}

// A process that has only inspected a lock, then forks: the child's records
// must carry the child's pid, not the identity its parent computed.
int inspect_then_fork(const char* inspected, const char* path) {
  (void)lockfile::inspect(inspected);
  std::fflush(stdout);
  const pid_t child = ::fork();
  if (child < 0) return 2;
  if (child == 0) {
    lockfile::PIDLock lock(path);
    std::error_code ec;
    lock.acquire(ec);
    if (ec) {
      std::fprintf(stderr, "lockfile_test_helper: %s\n", ec.message().c_str());
      std::fflush(stderr);
      ::_exit(2);
    }
    const auto status = lockfile::inspect(path);
    std::printf("child %d %d\n", static_cast<int>(::getpid()), status.lease ? status.lease->pid : 0);
    std::fflush(stdout);
    lock.release(ec);
    ::_exit(ec ? 3 : 0);
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child) return 2;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "fds" && argc == 2) return list_descriptors();
  if (mode == "hold" && argc == 5) return hold(argv[2], std::atol(argv[3]), std::atol(argv[4]));
  if (mode == "hold-report" && argc == 5)
    return hold_report(argv[2], std::atol(argv[3]), std::atol(argv[4]));
  if (mode == "try" && argc == 5) return try_once(argv[2], std::atol(argv[3]), std::atol(argv[4]));
  if (mode == "hold-main-exits" && argc == 5)
    return hold_main_exits(argv[2], std::atol(argv[3]), std::atol(argv[4]));
  if (mode == "inspect-then-fork" && argc == 4) return inspect_then_fork(argv[2], argv[3]);
  std::fprintf(stderr,
               "usage: lockfile_test_helper fds | hold PATH STALE_MS HEARTBEAT_MS | try PATH STALE_MS HEARTBEAT_MS"
               " | hold-main-exits PATH STALE_MS HEARTBEAT_MS | hold-report PATH STALE_MS HEARTBEAT_MS"
               " | inspect-then-fork INSPECTED PATH\n");
  return 64;
}
