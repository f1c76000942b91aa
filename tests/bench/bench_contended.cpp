// Benchmark: throughput and fairness of PIDLock when P processes contend
// for it without pause, against flock(2) under the same load, measured in
// the same run. Not a test: it prints figures for this machine.
//
//   bench_contended [--procs 2,4,8] [--seconds S] [--dir DIR]
//
// For each P, P processes each loop: lock(); a tiny critical section;
// unlock(). The critical section checks exclusivity: it raises a shared
// "inside" flag that must have been down (any overlap stops the run with an
// error) and increments a shared counter with a plain load and store, whose
// final value must equal the number of critical sections (a lost update is
// an overlap too). All state lives in MAP_SHARED memory.
// The processes first take the lock once each (warm-up: threads started,
// caches filled), meet at a barrier, then run for 0.3 s unmeasured and S
// seconds (default 3) measured, ending at one shared deadline. A cycle
// counts in the 100 ms window in which its lock() returned.
//
// How to read it: "cycles/s" is critical sections per second over the
// measured S seconds, all processes together; the window columns give the
// median and range of the 100 ms windows' rates (steadiness). "µs per cycle"
// and "× flock" compare the time per handoff with flock's at the same P.
// Shares are each process's part of all cycles, as a percentage and as a
// multiple of the fair share 1/P: 1.00× everywhere is perfectly fair; a
// smallest share near 0 means a process starved. "Longest wait" is the
// longest single lock() call of any process in the measured time. Neither
// flock nor PIDLock queues its waiters, so neither promises fairness; this
// shows how unfair each is in practice.
//
// The rows: flock = each process opens the file itself and loops on
// flock(LOCK_EX) / flock(LOCK_UN); O_EXCL + 1 ms poll = the naive lock
// file (create it with O_EXCL, else sleep 1 ms and retry; remove it to
// release), the floor of a lock file without wake-ups; PIDLock = each
// process has its own PIDLock (default options) on another file in the same
// directory and loops on lock() / unlock().
#include "bench_common.hpp"

#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using bench::fail;
using bench::fail_errno;
namespace fs = std::filesystem;

constexpr int max_procs = 64;
constexpr int max_windows = 1200;  // of 100 ms: 120 s
constexpr std::int64_t window_ns = 100'000'000;
constexpr std::int64_t warmup_ns = 300'000'000;

struct shared_state {
  std::atomic<int> ready{0};                // processes past their warm-up cycle
  std::atomic<std::int64_t> go_ns{0};       // set by the parent: start looping
  std::atomic<std::int64_t> measure_from_ns{0};
  std::atomic<std::int64_t> stop_ns{0};
  std::atomic<int> inside{0};               // 1 while some process is in its critical section
  std::atomic<std::uint64_t> counter{0};    // incremented non-atomically under the lock
  std::array<std::atomic<std::uint64_t>, max_procs> sections{};  // all critical sections, warm-up included
  std::array<std::array<std::atomic<std::uint32_t>, max_windows>, max_procs> cycles{};  // measured, per window
  std::array<std::atomic<std::int64_t>, max_procs> longest_wait_ns{};  // measured lock() calls
};

enum class kind { flock, excl_poll, pidlock };

const char* name_of(kind which) {
  switch (which) {
    case kind::flock: return "flock";
    case kind::excl_poll: return "O_EXCL+poll";
    case kind::pidlock: return "PIDLock";
  }
  return "?";
}

// The critical section: proves exclusivity or ends the run.
void critical_section(shared_state& shared, int process, const char* lock_name, int procs) {
  if (shared.inside.exchange(1) != 0) {
    std::fprintf(stderr,
                 "bench_contended: EXCLUSIVITY VIOLATED: process %d (pid %d) entered the critical section while "
                 "another was inside (%s, %d processes)\n",
                 process, static_cast<int>(::getpid()), lock_name, procs);
    ::_exit(3);
  }
  shared.counter.store(shared.counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  shared.inside.store(0);
}

// One contending process: never returns.
template <class Lock, class Unlock>
[[noreturn]] void contend(shared_state& shared, int process, int procs, const char* lock_name, Lock&& lock,
                          Unlock&& unlock) {
  try {
    lock();  // warm-up cycle
    critical_section(shared, process, lock_name, procs);
    unlock();
    shared.sections[process] += 1;
    shared.ready += 1;
    while (shared.go_ns.load() == 0) std::this_thread::yield();
    const std::int64_t from = shared.measure_from_ns.load();
    const std::int64_t stop = shared.stop_ns.load();
    for (;;) {
      const std::int64_t asked = bench::now_ns();
      lock();
      const std::int64_t now = bench::now_ns();
      critical_section(shared, process, lock_name, procs);
      unlock();
      shared.sections[process].fetch_add(1, std::memory_order_relaxed);
      if (now >= stop) break;
      if (now < from) continue;
      shared.cycles[process][(now - from) / window_ns].fetch_add(1, std::memory_order_relaxed);
      if (now - asked > shared.longest_wait_ns[process].load(std::memory_order_relaxed))
        shared.longest_wait_ns[process].store(now - asked, std::memory_order_relaxed);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_contended: process %d: %s\n", process, e.what());
    ::_exit(1);
  }
  ::_exit(0);
}

struct result {
  double cycles_per_second = 0;
  bench::summary windows;  // cycles/s per window
  double min_share = 0, max_share = 0;  // fractions of all cycles
  double longest_wait_us = 0;            // the longest single lock() call measured
};

result run(kind which, int procs, double seconds, const fs::path& dir) {
  auto* shared = bench::make_shared_state<shared_state>();
  const char* lock_name = name_of(which);
  const auto path = dir / (which == kind::flock ? "flock.lock" : which == kind::excl_poll ? "excl.lock" : "pidlock.lock");
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (int p = 0; p < procs; ++p) {
    const pid_t pid = bench::fork_or_fail();
    if (pid != 0) {
      children.push_back(pid);
      continue;
    }
    if (which == kind::flock) {
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) fail_errno("open %s", path.c_str());
      contend(
          *shared, p, procs, lock_name,
          [&] {
            if (::flock(fd, LOCK_EX) != 0) fail_errno("flock LOCK_EX");
          },
          [&] {
            if (::flock(fd, LOCK_UN) != 0) fail_errno("flock LOCK_UN");
          });
    }
    if (which == kind::excl_poll) {
      // The naive lock file (py-filelock's and proper-lockfile's way, less
      // their staleness checks): create it exclusively, else sleep 1 ms and
      // try again; release by removing it.
      const std::string record(260, 'x');
      contend(
          *shared, p, procs, lock_name,
          [&] {
            for (;;) {
              const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
              if (fd >= 0) {
                if (::write(fd, record.data(), record.size()) != static_cast<ssize_t>(record.size()))
                  fail_errno("write %s", path.c_str());
                ::close(fd);
                return;
              }
              if (errno != EEXIST) fail_errno("open %s", path.c_str());
              std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
          },
          [&] {
            if (::unlink(path.c_str()) != 0) fail_errno("unlink %s", path.c_str());
          });
    }
    lockfile::PIDLock lock(path);
    contend(*shared, p, procs, lock_name, [&] { lock.lock(); }, [&] { lock.unlock(); });
  }

  bench::await("every process's warm-up cycle", [&] { return shared->ready.load() == procs; });
  const std::int64_t go = bench::now_ns();
  const auto measured_ns = static_cast<std::int64_t>(seconds * 1e9);
  shared->measure_from_ns = go + warmup_ns;
  shared->stop_ns = go + warmup_ns + measured_ns;
  shared->go_ns = go;
  for (const pid_t pid : children) bench::reap_ok(pid, "contending process");

  std::uint64_t all_sections = 0;
  std::int64_t longest_wait_ns = 0;
  for (int p = 0; p < procs; ++p) {
    all_sections += shared->sections[p].load();
    longest_wait_ns = std::max(longest_wait_ns, shared->longest_wait_ns[p].load());
  }
  if (shared->counter.load() != all_sections)
    fail("EXCLUSIVITY VIOLATED (%s, %d processes): the counter reads %llu after %llu critical sections (lost updates)",
         lock_name, procs, static_cast<unsigned long long>(shared->counter.load()),
         static_cast<unsigned long long>(all_sections));

  const auto windows = static_cast<int>(measured_ns / window_ns);
  std::vector<double> per_window;
  std::vector<std::uint64_t> per_process(static_cast<std::size_t>(procs), 0);
  std::uint64_t total = 0;
  for (int w = 0; w < windows; ++w) {
    std::uint64_t in_window = 0;
    for (int p = 0; p < procs; ++p) {
      const std::uint64_t n = shared->cycles[p][w].load();
      in_window += n;
      per_process[static_cast<std::size_t>(p)] += n;
    }
    total += in_window;
    per_window.push_back(static_cast<double>(in_window) * 1e9 / static_cast<double>(window_ns));
  }
  bench::free_shared_state(shared);
  if (total == 0) fail("%s, %d processes: no cycle completed in %g s", lock_name, procs, seconds);

  result out;
  out.cycles_per_second = static_cast<double>(total) / (static_cast<double>(windows * window_ns) / 1e9);
  out.windows = bench::summarize(per_window);
  const auto [fewest, most] = std::minmax_element(per_process.begin(), per_process.end());
  out.min_share = static_cast<double>(*fewest) / static_cast<double>(total);
  out.max_share = static_cast<double>(*most) / static_cast<double>(total);
  out.longest_wait_us = static_cast<double>(longest_wait_ns) / 1000.0;
  return out;
}

std::string share(double fraction, int procs) {
  char text[48];
  std::snprintf(text, sizeof text, "%.1f %% (%.2f×)", 100.0 * fraction, fraction * procs);
  return text;
}

std::string rate(double per_second) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", per_second);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args(argc, argv, "bench_contended [--procs 2,4,8] [--seconds S] [--dir DIR]");
  const auto procs_list = args.integers("procs", {2, 4, 8});
  const double seconds = args.number("seconds", 3);
  const fs::path parent = args.text("dir", fs::temp_directory_path().string());
  args.reject_unknown();
  for (const int procs : procs_list)
    if (procs > max_procs) fail("--procs: at most %d processes", max_procs);
  if (seconds * 1e9 / static_cast<double>(window_ns) > max_windows || seconds < 0.1)
    fail("--seconds: from 0.1 to %lld", static_cast<long long>(max_windows * window_ns / 1'000'000'000));

  const bench::scratch_directory work(parent);
  std::printf("Directory %s (%s), %.1f s measured per row after %.1f s warm-up, windows of %lld ms.\n\n",
              work.path().c_str(), bench::file_system_name(work.path()).c_str(), seconds,
              static_cast<double>(warmup_ns) / 1e9, static_cast<long long>(window_ns / 1'000'000));
  std::printf("| lock | processes | cycles/s | per window: median (min–max) cycles/s | µs per cycle | × flock | "
              "smallest share (× fair) | largest share (× fair) | longest wait |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::pair<int, double>> ratios;  // PIDLock's throughput over the naive lock file's
  for (const int procs : procs_list) {
    const auto floor = run(kind::flock, procs, seconds, work.path());
    const auto naive = run(kind::excl_poll, procs, seconds, work.path());
    const auto lock = run(kind::pidlock, procs, seconds, work.path());
    for (const auto& [name, r] :
         {std::pair{"flock(2)", floor}, std::pair{"O_EXCL + 1 ms poll", naive}, std::pair{"PIDLock", lock}}) {
      std::printf("| %s | %d | %s | %s (%s–%s) | %.1f | %s | %s | %s | %s |\n", name, procs, rate(r.cycles_per_second).c_str(),
                  rate(r.windows.median).c_str(), rate(r.windows.min).c_str(), rate(r.windows.max).c_str(),
                  1e6 / r.cycles_per_second, bench::ratio(floor.cycles_per_second, r.cycles_per_second).c_str(),
                  share(r.min_share, procs).c_str(), share(r.max_share, procs).c_str(),
                  bench::micros(r.longest_wait_us).c_str());
    }
    std::fflush(stdout);
    ratios.push_back({procs, lock.cycles_per_second / naive.cycles_per_second});
  }
  std::printf("\n");
  for (const auto& [procs, ratio] : ratios)
    std::printf("%d processes: PIDLock %.2f× the throughput of O_EXCL + 1 ms poll.\n", procs, ratio);
  return 0;
}
