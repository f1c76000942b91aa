// Benchmark: what one uncontended PIDLock acquire() + release() costs, next
// to the floors a lock file cannot go below, all measured in the same run,
// in the same directory, with the same number of iterations. Not a test: it
// prints figures for this machine and this file system.
//
//   bench_floors [--iterations N] [--dir DIR]
//   bench_floors --syscalls N [--only NAME] [--dir DIR]
//   bench_floors --hold-seconds S [--locks K] [--dir DIR]
//
// Timed mode. Each row is one acquire+release cycle, timed on its own with
// steady_clock, N times (default 20,000) after N/10 warm-up cycles. The rows
// take turns in blocks of 250 cycles, so that a disturbance (another build,
// a writeback burst) spreads over all rows instead of skewing one. Rows:
//   pidlock     PIDLock::acquire() + release(), default options, one lock
//               object reused (the heartbeat thread is running, as it would be)
//   fencing     the same with Options::fencing (reported apart: it fsyncs)
//   flock       flock(2) LOCK_EX then LOCK_UN on a descriptor kept open
//   open-flock  open + flock(LOCK_EX) + close (close drops the lock)
//   excl        open(O_CREAT|O_EXCL) + write the record + close + unlink
//   link        the link() publication the lock protocol needs at least:
//               open(".<name>.<unique>.tmp", O_CREAT|O_EXCL) + write the
//               record + close + link() to the lock path + unlink the private
//               name, then unlink the lock path (release)
//   tmpfile     what PIDLock does on Linux instead: open(O_TMPFILE) + write +
//               linkat("/proc/self/fd/N") + unlink + close
// "record" is the size of the lease record PIDLock writes here (~300 bytes).
// The last column divides each median by the link floor's: how much the
// library adds to the cheapest race-free way of publishing a record.
// File-based rows depend on the file system (ext4 allocates and frees an
// inode per cycle; tmpfs does not touch a disk), which is printed.
//
// --syscalls N: N acquire+release cycles of one row (default pidlock) after
// one untimed cycle, nothing printed, for `strace -f -c`. Subtract a run
// with N = 0 and divide by N to get system calls per cycle (run.sh does).
//
// --hold-seconds S: holds K locks (default 1) for S seconds and prints
// "renew_tid<TAB>TID", the thread id of the heartbeat thread
// ("lockfile-renew"), for `strace -ff` to count its system calls per
// heartbeat.
#include "bench_common.hpp"

#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

using bench::fail;
using bench::fail_errno;
namespace fs = std::filesystem;

struct row {
  const char* name;
  const char* label;
  std::function<void()> cycle;  // one acquire + release
  long long every = 1;           // runs one cycle in `every` (a slow row keeps the run short)
  std::vector<double> samples_us{};
};

int open_or_fail(const fs::path& path, int flags, mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) fail_errno("open %s", path.c_str());
  return fd;
}

void write_or_fail(int fd, const std::string& bytes, const fs::path& path) {
  if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) fail_errno("write %s", path.c_str());
}

void close_or_fail(int fd, const fs::path& path) {
  if (::close(fd) != 0) fail_errno("close %s", path.c_str());
}

void unlink_or_fail(const fs::path& path) {
  if (::unlink(path.c_str()) != 0) fail_errno("unlink %s", path.c_str());
}

void flock_or_fail(int fd, int operation, const fs::path& path) {
  if (::flock(fd, operation) != 0) fail_errno("flock %s", path.c_str());
}

// The rows, in the order they are printed. Each closure owns what it needs
// (the lock object, the open descriptor) for the life of the run.
std::vector<row> make_rows(const fs::path& dir, std::size_t record_size) {
  // A record-sized line, as the floors' stand-in for the lease record.
  auto record = std::make_shared<const std::string>(std::string(record_size - 1, 'x') + '\n');
  std::vector<row> rows;

  auto lock = std::make_shared<lockfile::PIDLock>(dir / "pidlock.lock");
  rows.push_back({"pidlock", "PIDLock acquire() + release()", [lock] {
                    lock->acquire();
                    lock->release();
                  }});
  // Options::fencing: a generation created and fsynced (file and
  // directory), listed twice, the previous one removed, the record
  // rewritten. The fsyncs dominate on a disk.
  auto fenced = std::make_shared<lockfile::PIDLock>(dir / "fenced.lock", lockfile::Options{.fencing = true});
  rows.push_back({"fencing", "PIDLock acquire() + release(), fencing on (1 cycle in 20)", [fenced] {
                    fenced->acquire();
                    fenced->release();
                  }, 20});

  const auto flock_path = dir / "flock.lock";
  const int flock_fd = open_or_fail(flock_path, O_RDWR | O_CREAT);  // lives as long as the process
  rows.push_back({"flock", "flock(2) LOCK_EX + LOCK_UN, open fd", [flock_fd, flock_path] {
                    flock_or_fail(flock_fd, LOCK_EX, flock_path);
                    flock_or_fail(flock_fd, LOCK_UN, flock_path);
                  }});

  const auto open_flock_path = dir / "open-flock.lock";
  rows.push_back({"open-flock", "open + flock(LOCK_EX) + close", [open_flock_path] {
                    const int fd = open_or_fail(open_flock_path, O_RDWR | O_CREAT);
                    flock_or_fail(fd, LOCK_EX, open_flock_path);
                    close_or_fail(fd, open_flock_path);
                  }});

  const auto excl_path = dir / "excl.lock";
  rows.push_back({"excl", "O_CREAT\\|O_EXCL create + write + close + unlink", [excl_path, record] {
                    const int fd = open_or_fail(excl_path, O_WRONLY | O_CREAT | O_EXCL);
                    write_or_fail(fd, *record, excl_path);
                    close_or_fail(fd, excl_path);
                    unlink_or_fail(excl_path);
                  }});

  const auto link_path = dir / "link.lock";
  const auto private_path = dir / (".link.lock." + std::to_string(::getpid()) + ".tmp");
  rows.push_back({"link", "link() publish (private file, write, link, unlink private) + unlink",
                  [link_path, private_path, record] {
                    const int fd = open_or_fail(private_path, O_WRONLY | O_CREAT | O_EXCL);
                    write_or_fail(fd, *record, private_path);
                    close_or_fail(fd, private_path);
                    if (::link(private_path.c_str(), link_path.c_str()) != 0) fail_errno("link %s", link_path.c_str());
                    unlink_or_fail(private_path);
                    unlink_or_fail(link_path);
                  }});

  const auto tmpfile_path = dir / "tmpfile.lock";
  rows.push_back({"tmpfile", "O_TMPFILE + write + linkat(/proc/self/fd) + unlink + close",
                  [dir, tmpfile_path, record] {
                    const int fd = open_or_fail(dir, O_TMPFILE | O_RDWR);
                    write_or_fail(fd, *record, tmpfile_path);
                    const std::string proc_name = "/proc/self/fd/" + std::to_string(fd);
                    if (::linkat(AT_FDCWD, proc_name.c_str(), AT_FDCWD, tmpfile_path.c_str(), AT_SYMLINK_FOLLOW) != 0)
                      fail_errno("linkat %s", tmpfile_path.c_str());
                    unlink_or_fail(tmpfile_path);
                    close_or_fail(fd, tmpfile_path);
                  }});
  return rows;
}

// The size of the record PIDLock writes in this directory (host name,
// boot id and owner id make it vary a little from machine to machine).
std::size_t pidlock_record_size(const fs::path& dir) {
  const auto path = dir / "probe.lock";
  lockfile::PIDLock lock(path);
  lock.acquire();
  const auto size = fs::file_size(path);
  lock.release();
  return static_cast<std::size_t>(size);
}

row& find_row(std::vector<row>& rows, const std::string& name) {
  for (auto& r : rows)
    if (name == r.name) return r;
  fail("--only: no row named '%s' (pidlock, fencing, flock, open-flock, excl, link, tmpfile)", name.c_str());
}

void timed_run(std::vector<row>& rows, long long iterations, const fs::path& dir, std::size_t record_size) {
  constexpr long long block = 250;
  const long long warmup = std::max(100LL, iterations / 10);
  for (auto& r : rows) {
    for (long long i = 0; i < (warmup + r.every - 1) / r.every; ++i) r.cycle();
    r.samples_us.reserve(static_cast<std::size_t>(iterations / r.every + 1));
  }
  for (long long done = 0; done < iterations; done += block) {
    const long long count = std::min(block, iterations - done);
    for (auto& r : rows) {
      for (long long i = 0; i < (count + r.every - 1) / r.every; ++i) {
        const auto start = bench::clock_type::now();
        r.cycle();
        const auto end = bench::clock_type::now();
        r.samples_us.push_back(std::chrono::duration<double, std::micro>(end - start).count());
      }
    }
  }

  std::printf("Directory %s (%s), record %zu bytes, %lld cycles per row after %lld warm-up, rows interleaved in blocks of %lld.\n\n",
              dir.c_str(), bench::file_system_name(dir).c_str(), record_size, iterations, warmup, block);
  const double floor = bench::summarize(find_row(rows, "link").samples_us).median;
  std::printf("| uncontended acquire + release | median | p99 | min | max | × link floor |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    const auto s = bench::summarize(r.samples_us);
    std::printf("| %s | %s | %s | %s | %s | %s |\n", r.label, bench::micros(s.median).c_str(),
                bench::micros(s.p99).c_str(), bench::micros(s.min).c_str(), bench::micros(s.max).c_str(),
                bench::ratio(s.median, floor).c_str());
  }
}

// The thread id of this process's thread named name, or 0.
long find_thread(const std::string& name) {
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name) return std::stol(task.path().filename().string());
  }
  return 0;
}

void hold(const fs::path& dir, long long count, double seconds) {
  std::vector<std::unique_ptr<lockfile::PIDLock>> locks;
  for (long long i = 0; i < count; ++i) {
    locks.push_back(std::make_unique<lockfile::PIDLock>(dir / ("held-" + std::to_string(i) + ".lock")));
    locks.back()->acquire();
  }
  long tid = 0;
  bench::await("the lockfile-renew thread to be named", [&] { return (tid = find_thread("lockfile-renew")) != 0; });
  std::printf("renew_tid\t%ld\n", tid);
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  for (auto& lock : locks) lock->release();
}

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args(argc, argv,
                        "bench_floors [--iterations N] [--dir DIR]\n"
                        "       bench_floors --syscalls N [--only NAME] [--dir DIR]\n"
                        "       bench_floors --hold-seconds S [--locks K] [--dir DIR]");
  const long long iterations = args.integer("iterations", 20000, 1);
  const fs::path parent = args.text("dir", fs::temp_directory_path().string());
  const bool count_syscalls = args.text("syscalls", "") != "";
  const long long syscall_cycles = args.integer("syscalls", 0, 0);
  const std::string only = args.text("only", "pidlock");
  const bool hold_mode = args.text("hold-seconds", "") != "";
  const double hold_seconds = hold_mode ? args.number("hold-seconds", 1) : 0;
  const long long hold_locks = args.integer("locks", 1, 1);
  args.reject_unknown();

  const bench::scratch_directory work(parent);
  try {
    if (hold_mode) {
      hold(work.path(), hold_locks, hold_seconds);
      return 0;
    }
    const auto record_size = pidlock_record_size(work.path());
    auto rows = make_rows(work.path(), record_size);
    if (count_syscalls) {
      auto& r = find_row(rows, only);
      r.cycle();  // the first cycle starts threads and fills caches: not counted
      for (long long i = 0; i < syscall_cycles; ++i) r.cycle();
      return 0;
    }
    timed_run(rows, iterations, work.path(), record_size);
  } catch (const std::exception& e) {
    fail("%s", e.what());
  }
  return 0;
}
