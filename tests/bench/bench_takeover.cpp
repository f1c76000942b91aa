// Benchmark: how long a crashed holder's lock stays blocked. A holder
// process is SIGKILLed while a waiter sleeps in lock(); the figure is the
// time from the kill to the waiter's lock() returning. Not a test: it
// prints figures for this machine.
//
//   bench_takeover [--iterations N] [--cross-iterations M] [--dir DIR]
//
// Each round: fork a holder, which acquires and reports ready through
// MAP_SHARED memory, then sleeps; fork a waiter, which sets a flag and
// calls lock(). The parent waits until the waiter is asleep inside its
// wait (its main thread blocked in poll(2), or flock(2) for the floor, as
// /proc/PID/syscall shows: so its first attempt has seen the lock held),
// reads CLOCK_MONOTONIC and SIGKILLs the holder (and reaps it, as a
// supervisor would). The waiter reads the clock again when lock() returns,
// then releases. N rounds (default 200) after N/10 warm-up; M (default 5,
// about 1 s each) after one warm-up round for the cross-namespace row.
// Both sides of every PIDLock row use lease_stale_threshold = 1 s and
// lease_heartbeat_interval = 100 ms.
//
// Rows:
//   flock(2)        the floor: the waiter is blocked in flock(LOCK_EX); the
//                   kernel drops the dead holder's lock as it exits
//   same namespace  the waiter sees from the record that the holder lives in
//                   its own PID namespace, watches it through a pidfd, and
//                   takes over as soon as the exit is reported: expect tens
//                   of microseconds to a few milliseconds
//   other namespace the holder runs as pid 1 of a new PID namespace
//                   (unshare(CLONE_NEWPID), then fork). Its record names
//                   that namespace, so the waiter cannot probe the pid and
//                   must wait out the lease: expect about the 1 s threshold
//                   (up to one heartbeat interval less: the last heartbeat
//                   came before the kill), plus the waiter's poll period
// "× flock floor" divides each median by the floor's.
#include "bench_common.hpp"

#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace {

using bench::fail;
using bench::fail_errno;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

const lockfile::Options lease_options{.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 1s};

struct shared_state {
  std::atomic<pid_t> holder_pid{0};       // as this benchmark's namespace sees it
  std::atomic<int> holder_ready{0};
  std::atomic<int> unshare_errno{0};      // the cross-namespace holder could not be started
  std::atomic<int> waiter_entering{0};    // set right before lock() / flock()
  std::atomic<std::int64_t> acquired_ns{0};
};

enum class scenario { flock, same_namespace, other_namespace };

[[noreturn]] void sleep_forever() {
  for (;;) ::pause();
}

[[noreturn]] void hold_pidlock(shared_state& shared, const fs::path& path) {
  try {
    lockfile::PIDLock lock(path, lease_options);
    lock.acquire();
    shared.holder_ready = 1;
    sleep_forever();  // holding: the lock must outlive this scope
  } catch (const std::exception& e) {
    fail("holder: %s", e.what());
  }
}

[[noreturn]] void hold_flock(shared_state& shared, const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("holder: open %s", path.c_str());
  if (::flock(fd, LOCK_EX) != 0) fail_errno("holder: flock");
  shared.holder_ready = 1;
  sleep_forever();
}

// Starts the holder; returns the child to reap (for the other namespace:
// the holder's parent, which exits once the holder is gone).
pid_t start_holder(shared_state& shared, scenario which, const fs::path& path) {
  std::fflush(stdout);
  const pid_t child = bench::fork_or_fail();
  if (child > 0) {
    if (which != scenario::other_namespace) shared.holder_pid = child;
    return child;
  }
  switch (which) {
    case scenario::flock: hold_flock(shared, path);
    case scenario::same_namespace: hold_pidlock(shared, path);
    case scenario::other_namespace: break;
  }
  // The holder's parent: its next child is pid 1 of a new PID namespace.
  if (::unshare(CLONE_NEWPID) != 0) {
    shared.unshare_errno = errno;
    ::_exit(2);
  }
  const pid_t holder = bench::fork_or_fail();
  if (holder == 0) hold_pidlock(shared, path);
  shared.holder_pid = holder;  // fork() answers in the parent's (our) namespace
  int status = 0;
  if (::waitpid(holder, &status, 0) != holder) fail_errno("waitpid holder");
  ::_exit(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? 0 : 1);
}

// Forks the waiter: it takes the lock (timing the moment it has it),
// releases it and exits.
pid_t start_waiter(shared_state& shared, scenario which, const fs::path& path) {
  std::fflush(stdout);
  const pid_t child = bench::fork_or_fail();
  if (child > 0) return child;
  if (which == scenario::flock) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail_errno("waiter: open %s", path.c_str());
    shared.waiter_entering = 1;
    if (::flock(fd, LOCK_EX) != 0) fail_errno("waiter: flock");
    shared.acquired_ns = bench::now_ns();
    ::_exit(0);
  }
  try {
    lockfile::PIDLock lock(path, lease_options);
    shared.waiter_entering = 1;
    lock.lock();
    shared.acquired_ns = bench::now_ns();
    lock.release();
  } catch (const std::exception& e) {
    fail("waiter: %s", e.what());
  }
  ::_exit(0);
}

// The system call the main thread of pid is blocked in, or -1 when it is
// running or not in a system call (first field of /proc/PID/syscall).
long blocked_in(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/syscall");
  if (!file) fail_errno("open /proc/%d/syscall (needed to see that the waiter waits)", static_cast<int>(pid));
  std::string first;
  if (!(file >> first) || first == "running") return -1;
  try {
    return std::stol(first);
  } catch (const std::exception&) {
    return -1;
  }
}

bool is_wait_syscall(scenario which, long number) {
  if (which == scenario::flock) return number == SYS_flock;
#if defined(SYS_poll)
  if (number == SYS_poll) return true;
#endif
  return number == SYS_ppoll;
}

// One round: the kill-to-acquired time in microseconds, or the errno of a
// failed unshare.
struct round_result {
  double latency_us = 0;
  int unshare_errno = 0;
};

round_result one_round(scenario which, const fs::path& path) {
  auto* shared = bench::make_shared_state<shared_state>();
  const pid_t holder_child = start_holder(*shared, which, path);
  bench::await("the holder to acquire", [&] {
    return (shared->holder_ready.load() == 1 && shared->holder_pid.load() != 0) || shared->unshare_errno.load() != 0;
  });
  if (const int error = shared->unshare_errno.load()) {
    int status = 0;
    ::waitpid(holder_child, &status, 0);
    bench::free_shared_state(shared);
    return {0, error};
  }
  const pid_t waiter = start_waiter(*shared, which, path);
  bench::await("the waiter to block in its wait", [&] {
    int early = 0;
    if (::waitpid(waiter, &early, WNOHANG) == waiter) fail("the waiter ended before the holder was killed (wait status 0x%x)", static_cast<unsigned>(early));
    return shared->waiter_entering.load() == 1 && is_wait_syscall(which, blocked_in(waiter));
  });

  const std::int64_t killed_at = bench::now_ns();
  if (::kill(shared->holder_pid.load(), SIGKILL) != 0) fail_errno("kill holder");
  int status = 0;
  if (::waitpid(holder_child, &status, 0) != holder_child) fail_errno("waitpid holder");
  if (which == scenario::other_namespace ? !(WIFEXITED(status) && WEXITSTATUS(status) == 0)
                                         : !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
    fail("the holder did not die of SIGKILL (status 0x%x)", static_cast<unsigned>(status));
  bench::await("the waiter to take over", [&] { return shared->acquired_ns.load() != 0; });
  bench::reap_ok(waiter, "waiter");
  const std::int64_t acquired_at = shared->acquired_ns.load();
  bench::free_shared_state(shared);
  if (which != scenario::flock && fs::exists(path)) fail("the waiter left %s behind", path.c_str());
  return {static_cast<double>(acquired_at - killed_at) / 1000.0, 0};
}

// Runs warm-up + measured rounds; empty when unshare failed.
std::optional<bench::summary> measure(scenario which, int rounds, int warmup, const fs::path& path,
                                      std::string& why_not) {
  std::vector<double> samples;
  for (int i = 0; i < warmup + rounds; ++i) {
    const auto r = one_round(which, path);
    if (r.unshare_errno != 0) {
      why_not = std::string("unshare(CLONE_NEWPID): ") + std::strerror(r.unshare_errno);
      return std::nullopt;
    }
    if (i >= warmup) samples.push_back(r.latency_us);
  }
  return bench::summarize(std::move(samples));
}

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args(argc, argv, "bench_takeover [--iterations N] [--cross-iterations M] [--dir DIR]");
  const auto iterations = static_cast<int>(args.integer("iterations", 200, 1));
  const auto cross_iterations = static_cast<int>(args.integer("cross-iterations", 5, 1));
  const fs::path parent = args.text("dir", fs::temp_directory_path().string());
  args.reject_unknown();

  const bench::scratch_directory work(parent);
  const int warmup = std::max(5, iterations / 10);
  std::printf("Directory %s (%s); PIDLock rows: lease_stale_threshold 1 s, heartbeat 100 ms. "
              "Same-namespace rows: %d rounds after %d warm-up; other namespace: %d after 1.\n\n",
              work.path().c_str(), bench::file_system_name(work.path()).c_str(), iterations, warmup, cross_iterations);
  std::fflush(stdout);

  struct row {
    const char* label;
    std::optional<bench::summary> result;
    std::string why_not;
  };
  std::vector<row> rows(3);
  rows[0].label = "flock(2): waiter blocked in flock(LOCK_EX) (floor)";
  rows[0].result = measure(scenario::flock, iterations, warmup, work.path() / "flock.lock", rows[0].why_not);
  rows[1].label = "PIDLock, same PID namespace (pidfd, dead-owner probe)";
  rows[1].result = measure(scenario::same_namespace, iterations, warmup, work.path() / "same.lock", rows[1].why_not);
  rows[2].label = "PIDLock, holder in another PID namespace (lease expiry)";
  rows[2].result =
      measure(scenario::other_namespace, cross_iterations, 1, work.path() / "other.lock", rows[2].why_not);

  const double floor = rows[0].result->median;
  std::printf("| takeover (SIGKILL -> waiter's lock() returns) | rounds | median | p99 | min | max | × flock floor |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    if (!r.result) {
      std::printf("| %s | skipped: %s | | | | | |\n", r.label, r.why_not.c_str());
      continue;
    }
    const auto& s = *r.result;
    std::printf("| %s | %zu | %s | %s | %s | %s | %s |\n", r.label, s.count, bench::micros(s.median).c_str(),
                bench::micros(s.p99).c_str(), bench::micros(s.min).c_str(), bench::micros(s.max).c_str(),
                bench::ratio(s.median, floor).c_str());
  }
  if (rows[2].result)
    std::printf("\nOther namespace: the median is %+.1f ms from the 1 s stale threshold.\n",
                (rows[2].result->median - 1e6) / 1000.0);
  return 0;
}
