// Benchmark: how fast a release on this machine hands the lock to a process
// waiting in lock(), against the kernel's own floor (a process blocked in
// flock(2)), and what the renewal thread costs with 1, 100 and 1,000 held
// locks. Not a test: it prints figures for this machine.
//
//   bench_waiting [--iterations N] [--seconds S] [--dir DIR]
//
// Handoff latency: process A holds; process B is asleep in lock(); A reads
// CLOCK_MONOTONIC and releases; B reads it again as lock() returns. The
// difference, over N rounds after a warm-up, gives the median and p99.
// Renewal cost: CPU time (getrusage) of this otherwise idle process over S
// seconds while it holds K locks at the default heartbeat interval (250 ms),
// minus the same with no lock held.
#include <lockfile/lockfile.hpp>

#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;  // CLOCK_MONOTONIC: one clock for all processes

namespace {

struct shared_state {
  std::atomic<int> phase{0};            // 1: A holds, B may start waiting; 2: B is waiting
  std::atomic<std::int64_t> released_at{0};
  std::atomic<int> round{0};
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

void spin_until(const std::atomic<int>& value, int wanted) {
  while (value.load() != wanted) std::this_thread::yield();
}

struct summary {
  double median_us, p99_us, min_us, max_us;
};

summary summarize(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double q) { return samples[static_cast<std::size_t>(q * (samples.size() - 1))]; };
  return {at(0.5), at(0.99), samples.front(), samples.back()};
}

// Runs one handoff benchmark. hold/release/wait are what A and B do.
template <class Holder, class Waiter>
summary measure_handoff(int iterations, Holder&& holder_side, Waiter&& waiter_side) {
  auto* shared = static_cast<shared_state*>(
      ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (shared) shared_state{};
  int results[2];
  if (::pipe(results) != 0) std::exit(1);
  const int warmup = std::max(10, iterations / 10);
  const pid_t waiter = ::fork();
  if (waiter == 0) {
    ::close(results[0]);
    std::vector<double> samples;
    waiter_side([&](auto&& wait_for_lock, auto&& unlock) {
      for (int i = 0; i < warmup + iterations; ++i) {
        spin_until(shared->phase, 1);
        shared->phase = 2;
        wait_for_lock();
        const auto latency = now_ns() - shared->released_at.load();
        if (i >= warmup) samples.push_back(static_cast<double>(latency) / 1000.0);
        unlock();
        shared->phase = 0;
      }
    });
    const std::size_t count = samples.size();
    (void)!::write(results[1], &count, sizeof count);
    (void)!::write(results[1], samples.data(), count * sizeof(double));
    ::_exit(0);
  }
  ::close(results[1]);
  holder_side([&](auto&& take_lock, auto&& release) {
    for (int i = 0; i < warmup + iterations; ++i) {
      take_lock();
      shared->phase = 1;
      spin_until(shared->phase, 2);
      std::this_thread::sleep_for(2ms);  // let B fall asleep in its wait
      shared->released_at = now_ns();
      release();
      spin_until(shared->phase, 0);
    }
  });
  std::size_t count = 0;
  (void)!::read(results[0], &count, sizeof count);
  std::vector<double> samples(count);
  std::size_t got = 0;
  while (got < count * sizeof(double)) {
    const ssize_t n = ::read(results[0], reinterpret_cast<char*>(samples.data()) + got, count * sizeof(double) - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(results[0]);
  int status = 0;
  ::waitpid(waiter, &status, 0);
  ::munmap(shared, sizeof(shared_state));
  return summarize(std::move(samples));
}

double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// CPU share of one core used by this process while it holds `count` locks.
double renewal_cpu_percent(const fs::path& dir, int count, double seconds) {
  std::vector<std::unique_ptr<lockfile::PIDLock>> locks;
  for (int i = 0; i < count; ++i) {
    locks.push_back(std::make_unique<lockfile::PIDLock>(dir / ("held-" + std::to_string(i) + ".lock")));
    locks.back()->acquire();
  }
  std::this_thread::sleep_for(500ms);  // settle: spread of first heartbeats
  const double cpu_before = cpu_seconds();
  const auto wall_before = clock_type::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double cpu = cpu_seconds() - cpu_before;
  const double wall = std::chrono::duration<double>(clock_type::now() - wall_before).count();
  locks.clear();
  return 100.0 * cpu / wall;
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 2000;
  double seconds = 5;
  fs::path dir = fs::temp_directory_path();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--iterations") iterations = std::atoi(argv[i + 1]);
    else if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (flag == "--dir") dir = argv[i + 1];
  }
  std::string pattern = (dir / "lockfile-bench-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) return 1;
  const fs::path work = pattern;
  const auto path = work / "handoff.lock";
  std::printf("lockfile %s benchmark, %d handoffs per row, directory %s\n\n", LOCKFILE_VERSION, iterations,
              work.c_str());

  // The floor: a process blocked in flock(2) on the same file.
  const auto flock_path = work / "flock.lock";
  const auto floor = measure_handoff(
      iterations,
      [&](auto&& loop) {
        const int fd = ::open(flock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        loop([&] { ::flock(fd, LOCK_EX); }, [&] { ::flock(fd, LOCK_UN); });
        ::close(fd);
      },
      [&](auto&& loop) {
        const int fd = ::open(flock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        loop([&] { ::flock(fd, LOCK_EX); }, [&] { ::flock(fd, LOCK_UN); });
        ::close(fd);
      });

  const auto handoff = measure_handoff(
      iterations,
      [&](auto&& loop) {
        lockfile::PIDLock lock(path);
        loop([&] { lock.lock(); }, [&] { lock.unlock(); });
      },
      [&](auto&& loop) {
        lockfile::PIDLock lock(path);
        loop([&] { lock.lock(); }, [&] { lock.unlock(); });
      });

  std::printf("| handoff (release -> waiter's lock() returns) | median | p99 | min | max |\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| flock(2), blocked waiter (kernel floor) | %.1f us | %.1f us | %.1f us | %.1f us |\n", floor.median_us,
              floor.p99_us, floor.min_us, floor.max_us);
  std::printf("| PIDLock::lock() | %.1f us | %.1f us | %.1f us | %.1f us |\n\n", handoff.median_us, handoff.p99_us,
              handoff.min_us, handoff.max_us);
  std::fflush(stdout);

  std::printf("| held locks (heartbeat 250 ms) | renewal CPU, %% of one core |\n|---|---|\n");
  const double idle = renewal_cpu_percent(work, 0, seconds);
  for (const int count : {1, 100, 1000}) {
    const double busy = renewal_cpu_percent(work, count, seconds);
    std::printf("| %d | %.2f %% |\n", count, std::max(0.0, busy - idle));
    std::fflush(stdout);
  }
  std::error_code ignored;
  fs::remove_all(work, ignored);
  return 0;
}
