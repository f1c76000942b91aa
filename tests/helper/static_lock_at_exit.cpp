// A program whose only lock is a function-local `static PIDLock`, acquired
// and then left to be released by exit() (issue 13, #11). On a network path
// (a FUSE mount) that release runs after this thread's thread_local objects
// were destroyed; tests/test_hardening.cpp runs it on a bindfs mount. It is
// built with AddressSanitizer where the compiler offers it, so that a use of
// freed thread_local state at exit is reported instead of going unseen.
//
//   lockfile_static_lock_at_exit LOCK_FILE     exit 0 after printing "held"
#include <lockfile/lockfile.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fputs("usage: lockfile_static_lock_at_exit LOCK_FILE\n", stderr);
    return 2;
  }
  static lockfile::PIDLock lock(argv[1]);
  std::error_code ec;
  lock.acquire(ec);
  if (ec) {
    std::fprintf(stderr, "acquire %s: %s\n", argv[1], ec.message().c_str());
    return 3;
  }
  std::puts("held");
  std::fflush(stdout);
  return 0;  // the static lock is released by exit()
}
