// Descriptors the library makes for waiting: close-on-exec from the moment
// they exist. A descriptor made without it and marked close-on-exec a moment
// later (pipe() then fcntl()) leaks into whatever another thread fork()s and
// exec()s in between (DESIGN.md: "never leaks a descriptor into an exec'd
// child"). The calls are observed by this program's own pipe(), pipe2() and
// eventfd(), which the library's inlined code binds to; they forward to the C
// library's and check the new descriptors before anyone else could fork.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <string>

using namespace lockfile_test;
using lockfile::PIDLock;

namespace {

std::atomic<bool> observing{false};
std::atomic<int> made{0};           // descriptors made while observing
std::atomic<int> made_inheritable{0};  // ... of which without FD_CLOEXEC at birth

// Whether the call came from this program, where the library's inlined code
// is, and not from a sanitizer's runtime: UBSan's vptr check probes memory
// with a pipe() of its own (IsAccessibleMemoryRange), without close-on-exec,
// and closes it at once.
bool from_this_program(const void* caller) {
  static const void* const this_program = [] {
    Dl_info info{};
    return ::dladdr(&observing, &info) != 0 ? info.dli_fbase : nullptr;
  }();
  Dl_info info{};
  return ::dladdr(caller, &info) != 0 && info.dli_fbase == this_program;
}

void check_new(int fd, const void* caller) {
  if (fd < 0 || !observing.load() || !from_this_program(caller)) return;
  ++made;
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0 || (flags & FD_CLOEXEC) == 0) ++made_inheritable;
}

template <class Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));  // NOLINT: the C library's own
}

}  // namespace

extern "C" int pipe(int fds[2]) noexcept {
  static const auto next = real<int (*)(int*)>("pipe");
  const int rc = next(fds);
  if (rc == 0) {
    check_new(fds[0], __builtin_return_address(0));
    check_new(fds[1], __builtin_return_address(0));
  }
  return rc;
}

extern "C" int pipe2(int fds[2], int flags) noexcept {
  static const auto next = real<int (*)(int*, int)>("pipe2");
  const int rc = next(fds, flags);
  if (rc == 0) {
    check_new(fds[0], __builtin_return_address(0));
    check_new(fds[1], __builtin_return_address(0));
  }
  return rc;
}

extern "C" int eventfd(unsigned int count, int flags) noexcept {
  static const auto next = real<int (*)(unsigned int, int)>("eventfd");
  const int fd = next(count, flags);
  check_new(fd, __builtin_return_address(0));
  return fd;
}

TEST_CASE("descriptors: a waiting lock's wake-up descriptors are close-on-exec from the moment they exist",
          "[descriptors]") {
  // Before the fix, the portable path made its wake-up pipe with pipe() and
  // set FD_CLOEXEC afterwards: a fork and exec by another thread in between
  // inherited both ends.
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path, {.lease_heartbeat_interval = 50ms, .lease_stale_threshold = 2s});
  REQUIRE(holder.acquired());
  PIDLock lock(path, {.lease_heartbeat_interval = 50ms, .lease_stale_threshold = 2s});
  observing = true;
  const bool acquired = lock.try_lock_for(1ms);  // waits: makes its wait channel
  observing = false;
  CHECK_FALSE(acquired);
  INFO(made.load() << " descriptors made for waiting, " << made_inheritable.load()
                   << " of them without close-on-exec at first");
  CHECK(made.load() >= 1);  // the channel was made here (eventfd, or a pipe's two ends)
  CHECK(made_inheritable.load() == 0);
  CHECK(holder.finish() == 0);
}
