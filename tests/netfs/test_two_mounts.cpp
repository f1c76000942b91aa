// The network file-system lane (issue #8, DESIGN.md "Protocol" step 4): two
// FUSE mounts (bindfs) of one directory behave like two hosts that share
// files but not flocks, and both take the network path (claims, fresh reads,
// identity by bytes). Run through tests/netfs/run.sh, which mounts them and
// passes, in the environment:
//   LOCKFILE_NETFS_REAL  the backing directory (watched with inotify)
//   LOCKFILE_NETFS_A     one bindfs mount of it
//   LOCKFILE_NETFS_B     another bindfs mount of it
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <lockfile/lockfile.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdarg>
#include <functional>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <set>
#include <string>
#include <string_view>
#include <thread>

using namespace lockfile_test;
using namespace std::chrono_literals;
using lockfile::LockState;
using lockfile::PIDLock;

namespace {

// Set by the race test: every move of a lock file aside (the library's
// rename to ".<name>.<owner>.reclaim") waits this long first. That widens
// the gap between a reclaimer's fresh check and its move, in which, without
// the claim, another mount completes a whole reclamation and publication:
// the race the claim exists for, made frequent enough to see.
std::atomic<int> move_aside_delay_us{0};

// Set by the no-hard-links test: link() fails with EPERM, as on some FUSE
// and SMB mounts.
std::atomic<bool> links_unsupported{false};
std::atomic<int> links_refused{0};

// Set by the put-back test: runs once just before a move aside, in the gap
// between the reclaimer's fresh check and its rename (a renewal landing).
std::function<void()> before_move_aside;

// Set by the ESTALE test: this many statx() and pread() calls on a file
// named "x.lock" fail with ESTALE, as on an NFS client whose file handle the
// server no longer knows.
std::atomic<int> estale_budget{0};
thread_local const char* last_opened = "";

bool is_lock_file(const char* path) { return std::string_view(path).ends_with("/x.lock"); }

}  // namespace

extern "C" int link(const char* from, const char* to) noexcept {
  using link_fn = int (*)(const char*, const char*);
  static const auto real = reinterpret_cast<link_fn>(::dlsym(RTLD_NEXT, "link"));
  if (links_unsupported) {
    ++links_refused;
    errno = EPERM;
    return -1;
  }
  return real(from, to);
}

// This program's own rename() and link(): calls from the library (inlined
// into this executable) bind to them; they forward to the C library's.
extern "C" int rename(const char* from, const char* to) noexcept {
  using rename_fn = int (*)(const char*, const char*);
  static const auto real = reinterpret_cast<rename_fn>(::dlsym(RTLD_NEXT, "rename"));
  if (const int delay = move_aside_delay_us.load(); delay > 0 && std::string_view(to).ends_with(".reclaim"))
    std::this_thread::sleep_for(std::chrono::microseconds(delay));
  if (before_move_aside && std::string_view(to).ends_with(".reclaim")) std::exchange(before_move_aside, {})();
  return real(from, to);
}

// open() remembers the name, so that statx() and pread() on the descriptor
// know which file they are reading.
extern "C" int open(const char* path, int flags, ...) {
  using open_fn = int (*)(const char*, int, ...);
  static const auto real = reinterpret_cast<open_fn>(::dlsym(RTLD_NEXT, "open"));
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list args;
    va_start(args, flags);
    mode = static_cast<mode_t>(va_arg(args, int));
    va_end(args);
  }
  // The library reopens the file whose type it checked through its O_PATH
  // handle (/proc/self/fd/N): the same file as the open before.
  if (!std::string_view(path).starts_with("/proc/self/fd/")) last_opened = is_lock_file(path) ? "x.lock" : "";
  return real(path, flags, mode);
}

extern "C" int statx(int fd, const char* path, int flags, unsigned mask, struct statx* out) noexcept {
  using statx_fn = int (*)(int, const char*, int, unsigned, struct statx*);
  static const auto real = reinterpret_cast<statx_fn>(::dlsym(RTLD_NEXT, "statx"));
  if (*last_opened != '\0' && estale_budget.load() > 0 && estale_budget-- > 0) {
    errno = ESTALE;
    return -1;
  }
  return real(fd, path, flags, mask, out);
}

// pread64 for builds with _FILE_OFFSET_BITS=64; pread is what the library
// calls on 64-bit glibc otherwise (a pread64 alone was never reached). With
// statx first in line, the Linux path's budget goes to statx; the portable
// path (no statx) spends it here.
extern "C" ssize_t pread64(int fd, void* buffer, size_t count, off_t offset) {
  using pread_fn = ssize_t (*)(int, void*, size_t, off_t);
  static const auto real = reinterpret_cast<pread_fn>(::dlsym(RTLD_NEXT, "pread64"));
  if (*last_opened != '\0' && estale_budget.load() > 0 && estale_budget-- > 0) {
    errno = ESTALE;
    return -1;
  }
  return real(fd, buffer, count, offset);
}

extern "C" ssize_t pread(int fd, void* buffer, size_t count, off_t offset) {
  using pread_fn = ssize_t (*)(int, void*, size_t, off_t);
  static const auto real = reinterpret_cast<pread_fn>(::dlsym(RTLD_NEXT, "pread"));
  if (*last_opened != '\0' && estale_budget.load() > 0 && estale_budget-- > 0) {
    errno = ESTALE;
    return -1;
  }
  return real(fd, buffer, count, offset);
}

namespace {

// One test's directory, seen three ways: directly, and through each mount.
struct shared_directory {
  fs::path real;
  fs::path a;
  fs::path b;

  shared_directory() {
    const char* real_root = std::getenv("LOCKFILE_NETFS_REAL");
    const char* a_root = std::getenv("LOCKFILE_NETFS_A");
    const char* b_root = std::getenv("LOCKFILE_NETFS_B");
    if (!real_root || !a_root || !b_root)
      throw std::runtime_error("run these tests through tests/netfs/run.sh (it mounts the two views)");
    std::string pattern = std::string(real_root) + "/case-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    real = pattern;
    a = fs::path(a_root) / real.filename();
    b = fs::path(b_root) / real.filename();
  }
  ~shared_directory() {
    std::error_code ignored;
    fs::remove_all(real, ignored);
  }
  shared_directory(const shared_directory&) = delete;
  shared_directory& operator=(const shared_directory&) = delete;

  // The protocol's own files must not outlive a test that ends cleanly.
  std::set<std::string> entries() const {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(real)) names.insert(entry.path().filename().string());
    return names;
  }
};

// Memory shared with forked children; T must be default-constructible.
template <class T>
T* shared_memory() {
  void* memory = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw std::runtime_error("mmap failed");
  return new (memory) T{};
}

// Waits (spinning politely) until cond holds; false after the deadline.
template <class Condition>
bool await(Condition&& cond, std::chrono::seconds limit = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

// Counts renames of one name away from the watched directory.
class move_watch {
 public:
  move_watch(const fs::path& dir, std::string name) : name_(std::move(name)) {
    fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ < 0 || ::inotify_add_watch(fd_, dir.c_str(), IN_MOVED_FROM) < 0)
      throw std::runtime_error("inotify failed");
  }
  ~move_watch() { ::close(fd_); }
  move_watch(const move_watch&) = delete;
  move_watch& operator=(const move_watch&) = delete;

  // Renames of the name since the last call.
  int moves() {
    int count = 0;
    alignas(inotify_event) char buffer[16384];
    ssize_t n;
    while ((n = ::read(fd_, buffer, sizeof buffer)) > 0) {
      for (char* at = buffer; at < buffer + n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(at);
        if ((event->mask & IN_MOVED_FROM) && event->len > 0 && name_ == event->name) ++count;
        at += sizeof(inotify_event) + event->len;
      }
    }
    return count;
  }

 private:
  int fd_ = -1;
  std::string name_;
};

// Note: libfuse keeps a file that is unlinked while still open under a
// hidden name (".fuse_hiddenXXXX", as NFS does with ".nfsXXXX") until it
// sees the file closed, and close() reaches it asynchronously: directory
// listings are therefore checked with eventually().

// Reads one byte from a pipe within limit; '\0' on timeout or end of file.
char receive_within(const pipe_pair& pipe, std::chrono::milliseconds limit) {
  pollfd readable{pipe.read_end, POLLIN, 0};
  if (::poll(&readable, 1, static_cast<int>(limit.count())) != 1) return '\0';
  return pipe.receive();
}

}  // namespace

TEST_CASE("two mounts: the lock directory takes the network path through each of them") {
  shared_directory dir;
  CHECK(lockfile::file_system_kind(dir.a / "x.lock") == lockfile::FileSystemKind::network);
  CHECK(lockfile::file_system_kind(dir.b / "x.lock") == lockfile::FileSystemKind::network);
}

TEST_CASE("two mounts: 8 processes race on one stale file, one winner per round, no live file moved") {
  constexpr int workers = 8;
  constexpr int rounds = 200;
  shared_directory dir;
  struct board {
    std::atomic<int> round{-1};
    std::atomic<int> reported{0};
    std::atomic<int> release_round{-1};
    std::atomic<int> released{0};
    std::array<std::atomic<int>, workers> result{};  // 1 won, 0 lost, -1 error
    std::array<std::atomic<int>, workers> still_held{};
  };
  auto* shared = shared_memory<board>();
  move_aside_delay_us = 3000;
  std::vector<pid_t> children;
  for (int w = 0; w < workers; ++w) {
    const fs::path lock_file = (w % 2 == 0 ? dir.a : dir.b) / "x.lock";
    children.push_back(fork_child([&, w, lock_file]() -> int {
      for (int r = 0; r < rounds; ++r) {
        if (!await([&] { return shared->round.load() == r; })) return 10;
        PIDLock lock(lock_file, {.acquire_retry_delay = 2ms});
        int won = -1;
        try {
          won = lock.try_lock() ? 1 : 0;
        } catch (...) {
        }
        shared->result[w] = won;
        ++shared->reported;
        if (!await([&] { return shared->release_round.load() == r; })) return 11;
        shared->still_held[w] = lock.held() ? 1 : 0;
        lock.release();
        ++shared->released;
      }
      return 0;
    }));
  }

  move_watch watch(dir.real, "x.lock");
  int rounds_with_one_winner = 0;
  int errors = 0;
  int live_moves = 0;
  int winners_that_lost_it = 0;
  for (int r = 0; r < rounds; ++r) {
    // A stale file from a foreign owner, put in place by rename (atomic).
    write_file(dir.real / "stale.tmp", foreign_record(std::chrono::system_clock::now() - 1h));
    fs::rename(dir.real / "stale.tmp", dir.real / "x.lock");
    (void)watch.moves();
    shared->reported = 0;
    shared->round = r;
    REQUIRE(await([&] { return shared->reported.load() == workers; }));
    int winners = 0;
    for (auto& result : shared->result) {
      winners += result == 1;
      errors += result == -1;
    }
    rounds_with_one_winner += winners == 1;
    // Exactly one rename: the stale file, moved aside by its reclaimer.
    live_moves += std::max(0, watch.moves() - 1);
    shared->released = 0;
    shared->release_round = r;
    REQUIRE(await([&] { return shared->released.load() == workers; }));
    for (int w = 0; w < workers; ++w) winners_that_lost_it += shared->result[w] == 1 && shared->still_held[w] == 0;
  }
  move_aside_delay_us = 0;
  for (const pid_t child : children) CHECK(wait_exit(child) == 0);
  CHECK(rounds_with_one_winner == rounds);
  CHECK(errors == 0);
  CHECK(live_moves == 0);
  CHECK(winners_that_lost_it == 0);
  CHECK(eventually([&] { return dir.entries().empty(); }));  // no claim, aside or private file left
}

TEST_CASE("two mounts: a holder paused past the threshold loses to the other mount, is told, and its release leaves the new file alone") {
  const bool release_at_once = GENERATE(false, true);
  INFO("the paused holder releases " << (release_at_once ? "at once on resuming" : "after it was told"));
  shared_directory dir;
  pipe_pair lost;
  const int told = lost.write_end;
  const lockfile::Options quick{.lease_heartbeat_interval = 100ms,
                                .lease_stale_threshold = 800ms,
                                .on_lease_lost = [told] { (void)!::write(told, "L", 1); }};
  holder_process holder(dir.a / "x.lock", quick);
  REQUIRE(holder.acquired());
  lost.close_write();

  holder.signal(SIGSTOP);
  PIDLock taker(dir.b / "x.lock", {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 800ms});
  REQUIRE(eventually([&] { return taker.try_lock(); }, 20s));
  const auto mine = lockfile::inspect(dir.real / "x.lock");
  REQUIRE(mine.lease);

  holder.signal(SIGCONT);
  if (release_at_once) {
    CHECK(holder.finish() == 0);
    CHECK(receive_within(lost, 10s) == 'L');
  } else {
    CHECK(receive_within(lost, 10s) == 'L');
    CHECK(holder.finish() == 0);
  }
  // B's file is untouched, and B keeps renewing it.
  const auto after = lockfile::inspect(dir.real / "x.lock");
  REQUIRE(after.lease);
  CHECK(after.lease->owner_id == mine.lease->owner_id);
  CHECK(taker.held());
  CHECK(eventually([&] {
    const auto now = lockfile::inspect(dir.real / "x.lock");
    return now.lease && now.lease->owner_id == mine.lease->owner_id && now.lease->heartbeat > after.lease->heartbeat;
  }));
  CHECK(taker.held());
  taker.release();
  // (The paused holder's file, unlinked while it was still open there,
  // lingers as ".fuse_hidden..." until libfuse sees it closed.)
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("two mounts: lock and unlock from 3 processes on each mount keep an exact counter") {
  constexpr int per_mount = 3;
  constexpr int increments = 15;
  shared_directory dir;
  write_file(dir.real / "counter", std::string(20, '0'));
  struct board {
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
  };
  auto* shared = shared_memory<board>();
  std::vector<pid_t> children;
  for (int p = 0; p < 2 * per_mount; ++p) {
    const fs::path base = p % 2 == 0 ? dir.a : dir.b;
    children.push_back(fork_child([&, base]() -> int {
      PIDLock lock(base / "x.lock", {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 2s});
      for (int i = 0; i < increments; ++i) {
        std::lock_guard guard(lock);
        if (shared->inside.exchange(1) != 0) ++shared->overlaps;
        // Read and write the counter through this process's own mount.
        const auto text = read_file(base / "counter");
        std::string next = std::to_string(std::stoll(text) + 1);
        next.insert(0, 20 - next.size(), '0');
        write_file(base / "counter", next);
        shared->inside = 0;
      }
      return 0;
    }));
  }
  for (const pid_t child : children) CHECK(wait_exit(child) == 0);
  CHECK(shared->overlaps.load() == 0);
  CHECK(std::stoll(read_file(dir.real / "counter")) == 2 * per_mount * increments);
  fs::remove(dir.real / "counter");
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("two mounts: fencing tokens taken through both mounts are unique and rise in acquisition order") {
  constexpr int per_mount = 3;
  constexpr int rounds = 10;
  shared_directory dir;
  struct board {
    std::atomic<int> taken{0};
    std::array<std::uint64_t, 2 * per_mount * rounds> in_order{};  // written while held
  };
  auto* shared = shared_memory<board>();
  std::vector<pid_t> children;
  for (int p = 0; p < 2 * per_mount; ++p) {
    const fs::path base = p % 2 == 0 ? dir.a : dir.b;
    children.push_back(fork_child([&, base]() -> int {
      PIDLock lock(base / "x.lock",
                   {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 2s, .fencing = true});
      std::uint64_t last = 0;
      for (int i = 0; i < rounds; ++i) {
        std::lock_guard guard(lock);
        const auto token = lock.fencing_token();
        if (token <= last) return 2;
        last = token;
        shared->in_order[static_cast<std::size_t>(shared->taken.fetch_add(1))] = token;
      }
      return 0;
    }));
  }
  for (const pid_t child : children) CHECK(wait_exit(child) == 0);
  REQUIRE(shared->taken.load() == 2 * per_mount * rounds);
  const std::vector<std::uint64_t> order(shared->in_order.begin(), shared->in_order.end());
  // Rising in the order the holders took the lock: unique too.
  CHECK(std::adjacent_find(order.begin(), order.end(), std::greater_equal<>()) == order.end());
  // One generation name stays: the last one.
  CHECK(eventually([&] { return dir.entries() == std::set<std::string>{".x.lock.fence." + std::to_string(order.back())}; }));
  fs::remove(dir.real / (".x.lock.fence." + std::to_string(order.back())));
}

TEST_CASE("two mounts: a holder paused past its lease is taken over through the other mount with a higher token") {
  shared_directory dir;
  const lockfile::Options quick{.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 800ms, .fencing = true};
  holder_process holder(dir.a / "x.lock", quick);
  REQUIRE(holder.acquired());
  const auto paused = lockfile::inspect(dir.real / "x.lock");
  REQUIRE(paused.lease);
  REQUIRE(paused.lease->fencing_token >= 1);

  holder.signal(SIGSTOP);
  PIDLock taker(dir.b / "x.lock", quick);
  REQUIRE(eventually([&] { return taker.try_lock(); }, 20s));
  CHECK(taker.fencing_token() > paused.lease->fencing_token);
  const auto after = lockfile::inspect(dir.real / "x.lock");
  REQUIRE(after.lease);
  CHECK(after.lease->fencing_token == taker.fencing_token());
  holder.signal(SIGCONT);
  CHECK(holder.finish() == 0);
  const auto token = taker.fencing_token();
  taker.release();
  fs::remove(dir.real / (".x.lock.fence." + std::to_string(token)));
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("two mounts: inspect through one mount never calls a fresh lock written through the other stale") {
  shared_directory dir;
  const lockfile::Options quick{.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 1s};
  int stale = 0;
  int seen_held = 0;
  {  // A steady holder on B, watched from A for longer than its threshold.
    holder_process holder(dir.b / "x.lock", quick);
    REQUIRE(holder.acquired());
    const auto until = std::chrono::steady_clock::now() + 2500ms;
    while (std::chrono::steady_clock::now() < until) {
      const auto status = lockfile::inspect(dir.a / "x.lock", quick);
      stale += status.state == LockState::stale;
      seen_held += status.state == LockState::held;
    }
    CHECK(holder.finish() == 0);
  }
  CHECK(stale == 0);
  CHECK(seen_held > 0);

  // Generations coming and going on B, watched from A.
  auto* stop = shared_memory<std::atomic<bool>>();
  const pid_t churn = fork_child([&]() -> int {
    PIDLock lock(dir.b / "x.lock", quick);
    while (!stop->load()) {
      lock.lock();
      lock.unlock();
    }
    return 0;
  });
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < until)
    stale += lockfile::inspect(dir.a / "x.lock", quick).state == LockState::stale;
  *stop = true;
  CHECK(wait_exit(churn) == 0);
  CHECK(stale == 0);
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("two mounts: leftovers of a crashed reclaimer are swept once stale") {
  shared_directory dir;
  // What a reclaimer killed mid-way leaves: its claim, and a file it moved
  // aside. Both old; then a stale lock file whose reclamation sweeps them.
  const auto old = std::chrono::system_clock::now() - 1h;
  write_file(dir.real / ".x.lock.0123456789abcdef.claim", foreign_record(old, 999999, "crashed-claimant"));
  write_file(dir.real / ".x.lock.4242-1795787232520617979-3-774981f07cfb05bc.reclaim",
             foreign_record(old, 999999, "older-owner"));
  // A user's files that merely begin like the protocol's are never touched.
  write_file(dir.real / ".x.lock.backup.tmp", "user data");
  set_mtime(dir.real / ".x.lock.backup.tmp", old);
  write_file(dir.real / ".x.lock.notes.claim", "user data");
  set_mtime(dir.real / ".x.lock.notes.claim", old);
  // A fresh claim of someone alive is left alone.
  write_file(dir.real / ".x.lock.fedcba9876543210.claim",
             foreign_record(std::chrono::system_clock::now(), 999999, "live-claimant"));
  write_file(dir.real / "x.lock", foreign_record(old));
  PIDLock lock(dir.a / "x.lock");
  REQUIRE(lock.try_lock());
  const std::set<std::string> expected{"x.lock", ".x.lock.fedcba9876543210.claim", ".x.lock.backup.tmp",
                                       ".x.lock.notes.claim"};
  CHECK(eventually([&] { return dir.entries() == expected; }));
  lock.release();
}

TEST_CASE("two mounts: a file rewritten by another host is judged by what the server has, not by a client's cache") {
  if (!linux_extras)
    LOCKFILE_SKIP("portable POSIX path: no statx(AT_STATX_FORCE_SYNC), so a FUSE client's cached size and "
                  "mtime (attr_timeout) stand until they expire; NFS revalidates them at open (close-to-open)");
  shared_directory dir;
  // A short invalid file, last modified long ago: stale. A stat through A
  // (any program on that host, ls -l) leaves its size and times in A's
  // attribute cache (run.sh mounts with attr_timeout=30, as NFS caches).
  write_file(dir.real / "x.lock", "{");
  set_mtime(dir.real / "x.lock", std::chrono::system_clock::now() - 1h);
  CHECK(lockfile::inspect(dir.a / "x.lock").state == LockState::stale);
  CHECK(fs::file_size(dir.a / "x.lock") == 1);
  // Another host rewrites it in place with a fresh, longer record (written
  // here past both mounts, so neither hears of it).
  const auto fresh = foreign_record(std::chrono::system_clock::now());
  write_file(dir.real / "x.lock", fresh);
  // Judged from a cached size (1 byte) and mtime (an hour ago), this would
  // be a stale invalid file; the server says it is a live record.
  const auto status = lockfile::inspect(dir.a / "x.lock");
  CHECK(status.state == LockState::held);
  CHECK(status.lease.has_value());
  PIDLock lock(dir.a / "x.lock");
  CHECK_FALSE(lock.try_lock());
}

TEST_CASE("two mounts: without hard links, publishing falls back to O_EXCL and the protocol still holds") {
  shared_directory dir;
  links_unsupported = true;
  struct board {
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
  };
  auto* shared = shared_memory<board>();
  std::vector<pid_t> children;
  for (int p = 0; p < 4; ++p) {
    const fs::path base = p % 2 == 0 ? dir.a : dir.b;
    children.push_back(fork_child([&, base]() -> int {
      PIDLock lock(base / "x.lock", {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 2s});
      for (int i = 0; i < 10; ++i) {
        std::lock_guard guard(lock);
        if (shared->inside.exchange(1) != 0) ++shared->overlaps;
        std::this_thread::sleep_for(1ms);  // a critical section long enough to overlap in
        shared->inside = 0;
      }
      return 0;
    }));
  }
  for (const pid_t child : children) CHECK(wait_exit(child) == 0);
  CHECK(shared->overlaps.load() == 0);

  // A stale file is reclaimed: moved aside, and a put-back would be a rename
  // that refuses to replace.
  write_file(dir.real / "x.lock", foreign_record(std::chrono::system_clock::now() - 1h));
  PIDLock lock(dir.a / "x.lock");
  CHECK(lock.try_lock());
  CHECK(links_refused.load() > 0);  // the fallback ran (in this process, too)
  const auto status = lockfile::inspect(dir.b / "x.lock");
  CHECK(status.state == LockState::held);
  lock.release();
  links_unsupported = false;
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("two mounts: a claim left by a crashed reclaimer blocks that generation only until it is stale") {
  shared_directory dir;
  const auto old = std::chrono::system_clock::now() - 1h;
  write_file(dir.real / "x.lock", foreign_record(old, 999999, "gone-owner"));
  // The claim's name: FNV-1a of the generation's ownerID, in hex.
  std::uint64_t hash = 14695981039346656037ULL;
  for (const char c : std::string_view("gone-owner")) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  char token[17] = {};
  std::to_chars(token, token + 16, hash, 16);
  // Claimed half a second ago by a process that then died (foreign, so its
  // death cannot be proved): it blocks until the 1 s threshold has passed.
  const auto claimed = std::chrono::system_clock::now() - 500ms;
  const auto claim = dir.real / (std::string(".x.lock.") + token + ".claim");
  {
    lockfile::Lease lease;
    lease.owner_id = "crashed-claimant";
    lease.pid = 999999;
    lease.heartbeat = claimed;
    lease.stale_threshold = 1s;
    write_file(claim, lockfile::format_lease(lease));
  }
  PIDLock lock(dir.a / "x.lock", {.acquire_retry_limit = 1, .lease_heartbeat_interval = 100ms,
                                  .lease_stale_threshold = 1s});
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == lockfile::errc::retry_limit_exceeded);  // the claim is live: someone is removing it
  CHECK(read_file(dir.real / "x.lock") == foreign_record(old, 999999, "gone-owner"));
  CHECK(lock.try_lock_for(10s));
  CHECK(std::chrono::system_clock::now() - claimed >= 1s);
  lock.release();
  CHECK(eventually([&] { return dir.entries().empty(); }));  // the stale claim was swept
}

TEST_CASE("two mounts: a holder whose file another host overwrites in place learns of it from a fresh read") {
  shared_directory dir;
  pipe_pair lost;
  const int told = lost.write_end;
  holder_process holder(dir.a / "x.lock", {.lease_heartbeat_interval = 50ms,
                                           .lease_stale_threshold = 2s,
                                           .on_lease_lost = [told] { (void)!::write(told, "L", 1); }});
  REQUIRE(holder.acquired());
  lost.close_write();
  // Another owner's record, written into the same file through mount B (as
  // the Go package's tests do): same inode, new bytes.
  const auto usurper = foreign_record(std::chrono::system_clock::now(), 4242, "usurper");
  {
    const int fd = ::open((dir.b / "x.lock").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, usurper.data(), usurper.size()) == static_cast<ssize_t>(usurper.size()));
    ::close(fd);
  }
  CHECK(receive_within(lost, 10s) == 'L');
  CHECK(holder.finish() == 0);
  CHECK(read_file(dir.real / "x.lock") == usurper);  // its release left the usurper's file alone
}

TEST_CASE("two mounts: a renewal that lands between a reclaimer's check and its move is put back") {
  shared_directory dir;
  // A record that looks stale (an hour old), whose owner renews it just as
  // the reclaimer is about to move it aside: the reclaimer must notice the
  // moved file changed, and put it back.
  write_file(dir.real / "x.lock", foreign_record(std::chrono::system_clock::now() - 1h));
  const auto renewed = foreign_record(std::chrono::system_clock::now());
  before_move_aside = [&] { write_file(dir.real / "x.lock", renewed); };
  PIDLock lock(dir.a / "x.lock");
  CHECK_FALSE(lock.try_lock());  // put back, then judged again: held
  CHECK_FALSE(before_move_aside);  // the renewal did land in that gap
  CHECK(read_file(dir.real / "x.lock") == renewed);
  CHECK(eventually([&] { return dir.entries() == std::set<std::string>{"x.lock"}; }));
}

TEST_CASE("two mounts: ESTALE from statx or pread of a just-opened lock file is retried, never an error") {
  shared_directory dir;
  write_file(dir.real / "x.lock", foreign_record(std::chrono::system_clock::now()));
  PIDLock lock(dir.a / "x.lock");
  for (const int failures : {1, 2, 3}) {
    INFO(failures << " ESTALE answers in a row");
    estale_budget = failures;
    std::error_code ec;
    lock.acquire(ec);
    CHECK(ec == lockfile::errc::lock_held);  // a live foreign record: held, not an error
    CHECK(estale_budget.load() <= 0);
  }
  estale_budget = 2;
  CHECK(lockfile::inspect(dir.a / "x.lock").state == LockState::held);
  estale_budget = 0;
  // (A fresh lock: this one saw the bytes change, and would call the file
  // alive by observation.)
  write_file(dir.real / "x.lock", foreign_record(std::chrono::system_clock::now() - 1h));
  PIDLock reclaimer(dir.a / "x.lock");
  estale_budget = 2;
  CHECK(reclaimer.try_lock());
  estale_budget = 0;
  reclaimer.release();
}

TEST_CASE("two mounts: the sweep never removes a file that is not a lease, even under a protocol name") {
  // Leftovers were judged like lock files, and any unparseable old file
  // counted as a stale invalid one: a user's file that happened to have a
  // claim's or a temporary file's exact shape was swept away.
  shared_directory dir;
  const auto old = std::chrono::system_clock::now() - 1h;
  const std::vector<std::string> users{".x.lock.0123456789abcdee.claim", ".x.lock.4242-1-2-abc.tmp",
                                       ".x.lock.4242-1-3-abd.reclaim"};
  for (const auto& name : users) {
    write_file(dir.real / name, "user data\n");
    set_mtime(dir.real / name, old);
  }
  write_file(dir.real / "x.lock", foreign_record(old));
  PIDLock lock(dir.a / "x.lock");
  REQUIRE(lock.try_lock());
  std::set<std::string> expected(users.begin(), users.end());
  expected.insert("x.lock");
  CHECK(dir.entries() == expected);
  for (const auto& name : users) CHECK(read_file(dir.real / name) == "user data\n");
  lock.release();
}
