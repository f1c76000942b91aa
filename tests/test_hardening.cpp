// Regression tests for issue 13 ("Hardening"): lease generations, callbacks
// after the destructor, fork, flocked readers, sticky directories, the one
// inotify instance per process, hung mounts and exit-time state. Each case is
// named after the problem it guards; each failed on 25ed447.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <cstdio>
#include <memory>
#include <mutex>
#include <sstream>

using namespace lockfile_test;
using lockfile::Lease;
using lockfile::Options;
using lockfile::PIDLock;
using std::chrono::steady_clock;
using std::chrono::system_clock;

namespace {

// Puts bytes at path atomically (a temporary file renamed over it), as
// another owner's takeover would.
void replace_with(const fs::path& path, const std::string& bytes) {
  const auto temporary = path.parent_path() / (path.filename().string() + ".replacement");
  write_file(temporary, bytes);
  fs::rename(temporary, path);
}

struct file_id {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const file_id&) const = default;
};

file_id id_of_path(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {};
  return {st.st_dev, st.st_ino};
}

file_id id_of_fd(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {};
  return {st.st_dev, st.st_ino};
}

// The descriptor numbers of this process that name the file at path.
std::vector<int> descriptors_of(const fs::path& path) {
  const auto want = id_of_path(path);
  std::vector<int> found;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(entry.path().filename().string());
    if (want.ino != 0 && id_of_fd(fd) == want) found.push_back(fd);
  }
  return found;
}

// How many inotify instances this process has open.
int inotify_instances() {
  int count = 0;
  std::error_code ec;
  for (fs::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) {
    char target[128] = {};
    const auto n = ::readlink(it->path().c_str(), target, sizeof target - 1);
    if (n > 0 && std::string_view(target, static_cast<std::size_t>(n)) == "anon_inode:inotify") ++count;
  }
  return count;
}

// A record with our boot id and PID namespace, so that the dead-owner probe
// (or process_appears_alive, which replaces it) is asked about pid.
std::string same_space_record(int pid, std::chrono::milliseconds threshold = 60s) {
  Lease lease;
  lease.owner_id = "same-space-owner";
  lease.pid = pid;
  lease.heartbeat = system_clock::now();
  lease.host = "this-host";
  lease.boot_id = our_boot_id();
  lease.pid_namespace = our_pid_namespace();
  lease.stale_threshold = threshold;
  return lockfile::format_lease(lease);
}

// A gate that threads wait on until it is opened; opened at the latest when
// it is destroyed, so that a failing check never leaves a thread blocked.
class gate {
 public:
  gate() = default;
  gate(const gate&) = delete;
  gate& operator=(const gate&) = delete;
  ~gate() { open(); }
  void open() {
    {
      std::lock_guard guard(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // True when opened within limit.
  bool wait(std::chrono::milliseconds limit = 60s) {
    std::unique_lock guard(mutex_);
    return cv_.wait_for(guard, limit, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------
// #2: threads sharing one PIDLock

TEST_CASE("hardening: a late release() by one thread never removes the lease another thread acquired "
          "through the same PIDLock",
          "[hardening]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock lock(path, {.lease_heartbeat_interval = 20ms, .lease_stale_threshold = 2s});
  lock.acquire();
  const auto foreign = foreign_record(system_clock::now(), 4242, "usurper");
  replace_with(path, foreign);
  REQUIRE(eventually([&] { return !lock.held(); }));
  const auto foreign_id = id_of_path(path);

  SECTION("while the lost lease is unreleased, acquire() fails with lease_lost, and release() leaves the "
          "foreign file alone") {
    std::error_code ec;
    lock.acquire(ec);
    CHECK(ec == lockfile::errc::lease_lost);
    CHECK_FALSE(lock.held());
    CHECK(read_file(path) == foreign);
    lock.release();  // the lost generation's release: a no-op on disk
    CHECK(fs::exists(path));
    CHECK(read_file(path) == foreign);
    CHECK(id_of_path(path) == foreign_id);
    CHECK(dir.entries() == std::set<std::string>{"app.lock"});
  }

  SECTION("the usurper is gone: thread B's acquire() still fails with lease_lost and creates no file; "
          "thread A's late release() then lets B acquire, and B's lease survives") {
    fs::remove(path);  // the usurper released
    std::error_code b_ec;
    std::thread b([&] { lock.acquire(b_ec); });
    b.join();
    CHECK(b_ec == lockfile::errc::lease_lost);
    CHECK_FALSE(fs::exists(path));  // no fresh lease for A's late release to remove
    CHECK(dir.entries().empty());

    const bool b_got_it = !b_ec;
    const auto b_record = b_got_it ? read_file(path) : std::string();
    std::thread a([&] { lock.release(); });  // A, late
    a.join();
    if (b_got_it) {
      INFO("B acquired anew; A's late release() must leave B's fresh lease in place");
      CHECK(fs::exists(path));
      CHECK(read_file(path) == b_record);
      CHECK(lock.held());
      lock.release();
    }
    CHECK_FALSE(fs::exists(path));

    std::thread b2([&] { lock.acquire(b_ec); });
    b2.join();
    CHECK_FALSE(b_ec);
    CHECK(lock.held());
    CHECK(fs::exists(path));
  }
}

// ---------------------------------------------------------------------------
// #8: no callback after the destructor

TEST_CASE("hardening: on_lease_lost never runs after ~PIDLock has returned, even when acquire() was "
          "called on the lost lease first",
          "[hardening]") {
  temp_dir dir;
  // The notifier runs callbacks one at a time: the blocker's callback holds
  // it while the victim's loss is queued behind it.
  gate blocker_may_return;
  std::atomic<bool> blocker_running{false};
  PIDLock blocker(dir / "blocker.lock", {.lease_heartbeat_interval = 20ms,
                                         .lease_stale_threshold = 2s,
                                         .on_lease_lost = [&] {
                                           blocker_running = true;
                                           (void)blocker_may_return.wait();
                                         }});
  auto victim_calls = std::make_shared<std::atomic<int>>(0);
  auto marker_calls = std::make_shared<std::atomic<int>>(0);
  auto victim = std::make_unique<PIDLock>(
      dir / "victim.lock",
      Options{.lease_heartbeat_interval = 20ms, .lease_stale_threshold = 2s, .on_lease_lost = [victim_calls] {
                ++*victim_calls;
              }});
  PIDLock marker(dir / "marker.lock", {.lease_heartbeat_interval = 20ms,
                                       .lease_stale_threshold = 2s,
                                       .on_lease_lost = [marker_calls] { ++*marker_calls; }});
  // Destroyed before blocker, so the blocker's callback returns first.
  struct opener {
    gate& g;
    ~opener() { g.open(); }
  } open_on_exit{blocker_may_return};

  blocker.acquire();
  victim->acquire();
  marker.acquire();

  replace_with(dir / "blocker.lock", foreign_record(system_clock::now(), 4242, "usurper-1"));
  REQUIRE(eventually([&] { return blocker_running.load(); }));

  replace_with(dir / "victim.lock", foreign_record(system_clock::now(), 4243, "usurper-2"));
  REQUIRE(eventually([&] { return !victim->held(); }));  // its callback is queued now

  // (The destructor may tell the loss itself, on its own thread, before it
  // returns; what counts is a call after it returned.)
  int calls_when_destroyed = -1;
  SECTION("acquire() on the lost lease, then the destructor") {
    std::error_code ignored;
    victim->acquire(ignored);
    victim.reset();
    calls_when_destroyed = victim_calls->load();
  }
  SECTION("the destructor alone") {
    victim.reset();
    calls_when_destroyed = victim_calls->load();
  }

  // A third loss, queued after the victim's: once its callback has run, the
  // victim's would have run before it.
  replace_with(dir / "marker.lock", foreign_record(system_clock::now(), 4244, "usurper-3"));
  REQUIRE(eventually([&] { return !marker.held(); }));
  blocker_may_return.open();
  REQUIRE(eventually([&] { return marker_calls->load() == 1; }, 30s));
  INFO("the victim's on_lease_lost ran " << calls_when_destroyed << " time(s) before ~PIDLock returned");
  CHECK(victim_calls->load() == calls_when_destroyed);
}

// ---------------------------------------------------------------------------
// #9: fork closes descriptors by number

TEST_CASE("hardening: after fork() the child's use of an inherited PIDLock never closes a descriptor the "
          "child opened itself under the parent's number",
          "[hardening]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  auto lock = std::make_unique<PIDLock>(path);
  lock->acquire();
  // The owner's ownerID (the heartbeat's digits change with every renewal).
  const auto owner_of = [](const fs::path& file) {
    const auto lease = lockfile::parse_lease(read_file(file));
    return lease ? lease->owner_id : std::string();
  };
  const auto owner = owner_of(path);
  REQUIRE_FALSE(owner.empty());
  const auto numbers = descriptors_of(path);
  REQUIRE(numbers.size() == 1);
  const int number = numbers.front();
  const auto mine = dir / "mine";
  write_file(mine, "the child's own file\n");

  const pid_t child = fork_child([&]() -> int {
    ::alarm(20);
    const int own = ::open(mine.c_str(), O_RDONLY | O_CLOEXEC);
    if (own < 0) return 20;
    if (own != number) {
      // close(number) + open would do the same; dup2 makes the number certain.
      if (::dup2(own, number) != number) return 21;
      ::close(own);
    }
    const auto mine_id = id_of_path(mine);
    if (lock->held()) return 10;  // the child owns nothing
    std::error_code ec;
    lock->release(ec);
    if (ec) return 11;
    if (::fcntl(number, F_GETFD) == -1) return 12;  // release() closed the child's file
    if (id_of_fd(number) != mine_id) return 13;
    lock.reset();
    if (::fcntl(number, F_GETFD) == -1) return 14;  // the destructor closed it
    if (id_of_fd(number) != mine_id) return 15;
    if (owner_of(path) != owner) return 16;  // the parent's file left alone
    return 0;
  });
  const int code = wait_exit(child);
  INFO("child exit code " << code
                          << " (10 held() true, 11 release() failed, 12/13 release() closed or replaced the "
                             "child's descriptor, 14/15 the destructor did, 16 the parent's file changed, "
                             "142 alarm)");
  CHECK(code == 0);
  CHECK(lock->held());
  CHECK(owner_of(path) == owner);
}

// ---------------------------------------------------------------------------
// #10: a child deadlocks on an inherited object

TEST_CASE("hardening: a forked child can use an inherited PIDLock that another parent thread was inside at "
          "the fork",
          "[hardening]") {
  if (!linux_extras)
    LOCKFILE_SKIP("portable POSIX path: process_appears_alive is never asked (its records carry no "
                  "same-machine identity), so no parent thread can be held inside acquire() here; the fork "
                  "handling itself is the same code in both lanes");
  temp_dir dir;
  const auto path = dir / "app.lock";
  const pid_t parent = ::getpid();
  gate may_answer;
  std::atomic<bool> asking{false};
  Options options{.lease_heartbeat_interval = 50ms, .lease_stale_threshold = 2s};
  options.process_appears_alive = [&, parent](int) {
    if (::getpid() == parent) {  // the child must never wait on the parent's gate
      asking = true;
      (void)may_answer.wait();
    }
    return true;
  };
  // A record of our own PID space, so process_appears_alive is asked (and
  // blocks the parent's thread inside acquire()).
  write_file(path, same_space_record(static_cast<int>(parent)));
  PIDLock lock(path, options);

  std::error_code thread_ec;
  std::thread inside([&] { lock.acquire(thread_ec); });
  struct finish {
    gate& g;
    std::thread& t;
    ~finish() {
      g.open();
      if (t.joinable()) t.join();
    }
  } finish_on_exit{may_answer, inside};
  REQUIRE(eventually([&] { return asking.load(); }));

  SECTION("the child calls acquire()") {
    const pid_t child = fork_child([&]() -> int {
      ::alarm(10);  // SIGALRM (exit 142) instead of a hang
      std::error_code ec;
      lock.acquire(ec);
      return ec == lockfile::errc::lock_held ? 0 : 3;
    });
    const int code = wait_exit(child);
    INFO("child exit code " << code << " (142: still blocked in acquire() after 10 s)");
    CHECK((code == 0 || code == 3));  // it returned
    if (code == 3) WARN("the child's acquire() returned, but not with lock_held");
  }
  SECTION("the child calls try_lock()") {
    const pid_t child = fork_child([&]() -> int {
      ::alarm(10);
      return lock.try_lock() ? 3 : 0;
    });
    const int code = wait_exit(child);
    INFO("child exit code " << code << " (142: still blocked in try_lock() after 10 s)");
    CHECK((code == 0 || code == 3));  // it returned
    if (code == 3) WARN("the child's try_lock() returned true on a lock held by a live owner");
  }
  may_answer.open();
  inside.join();
  CHECK(thread_ec == lockfile::errc::lock_held);
}

// ---------------------------------------------------------------------------
// #4: a reader holding flock(LOCK_SH) on the lock file

namespace {

// A process that opens the file read-only and holds flock(LOCK_SH) on it
// until destroyed.
class shared_flock_reader {
 public:
  explicit shared_flock_reader(const fs::path& path) {
    pid_ = fork_child([&]() -> int {
      ready_.close_read();
      stop_.close_write();
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || ::flock(fd, LOCK_SH) != 0) {
        ready_.send('F');
        return 2;
      }
      ready_.send('L');
      (void)stop_.receive();
      return 0;
    });
    ready_.close_write();
    stop_.close_read();
    locked_ = ready_.receive() == 'L';
  }
  ~shared_flock_reader() {
    stop_.close_write();
    wait_exit(pid_);
  }
  shared_flock_reader(const shared_flock_reader&) = delete;
  shared_flock_reader& operator=(const shared_flock_reader&) = delete;
  bool locked() const { return locked_; }

 private:
  pipe_pair ready_;
  pipe_pair stop_;
  pid_t pid_ = -1;
  bool locked_ = false;
};

}  // namespace

TEST_CASE("hardening: a reader's flock(LOCK_SH) on the lock file never makes the owner's release() fail",
          "[hardening]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock lock(path);
  lock.acquire();
  shared_flock_reader reader(path);
  REQUIRE(reader.locked());
  const auto start = steady_clock::now();
  std::error_code ec;
  lock.release(ec);
  const auto took = steady_clock::now() - start;
  INFO("release(): " << ec.message() << " after "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  CHECK_FALSE(ec);
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(lock.held());
  CHECK(took < 10s);
}

TEST_CASE("hardening: a stale lease whose file a reader holds flock(LOCK_SH) on is still reclaimed on the "
          "same machine",
          "[hardening]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  // A foreign owner (no identity fields: no dead-owner probe), long silent.
  write_file(path, foreign_record(system_clock::now() - 1h));
  shared_flock_reader reader(path);
  REQUIRE(reader.locked());
  const Options options{.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 1s};

  SECTION("try_lock_for(10s)") {
    PIDLock lock(path, options);
    const auto start = steady_clock::now();
    const bool got = lock.try_lock_for(10s);
    INFO("waited " << std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - start).count()
                   << " ms");
    CHECK(got);
    CHECK(lock.held());
  }
  SECTION("lock()") {
    const pid_t child = fork_child([&]() -> int {
      ::alarm(15);  // SIGALRM (exit 142) instead of waiting forever
      PIDLock lock(path, options);
      lock.lock();
      return lock.held() ? 0 : 3;
    });
    const int code = wait_exit(child);
    INFO("child exit code " << code << " (142: lock() still waiting after 15 s)");
    CHECK(code == 0);
  }
}

// ---------------------------------------------------------------------------
// #6: another user's crashed lock in a sticky directory

TEST_CASE("hardening: another user's crashed lock in a sticky directory is a clear EPERM error naming the "
          "file and its owner, not an endless retry",
          "[hardening]") {
  if (::geteuid() != 0) LOCKFILE_SKIP("needs root (chown to another user, setuid to nobody)");
  temp_dir dir;
  fs::permissions(dir.path(), static_cast<fs::perms>(0755));  // nobody must reach the sticky directory
  const auto sticky = dir / "shared";
  fs::create_directory(sticky);
  REQUIRE(::chmod(sticky.c_str(), 01777) == 0);
  const auto path = sticky / "app.lock";
  const auto stale = foreign_record(system_clock::now() - 1h, 999999, "crashed-other-user");
  write_file(path, stale);
  REQUIRE(::chown(path.c_str(), 1, 1) == 0);
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  const struct passwd* owner = ::getpwuid(1);
  const std::string owner_name = owner ? owner->pw_name : "";

  // Reports the outcome on a pipe: the child checks, the parent explains.
  const auto run_as_nobody = [&](bool waiting) {
    pipe_pair report;
    const pid_t child = fork_child([&]() -> int {
      report.close_read();
      ::alarm(20);
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return 2;
      PIDLock lock(path, {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 1s});
      std::string what;
      int code = 0;
      const auto start = steady_clock::now();
      try {
        if (waiting) {
          code = lock.try_lock_for(5s) ? 10 : 11;  // 11: spun until the timeout
        } else {
          lock.acquire();
          code = 10;
        }
      } catch (const fs::filesystem_error& e) {
        what = e.what();
        if (e.path1() != path) code = 12;
        else if (e.code() != std::errc::operation_not_permitted) code = 13;
        else if (what.find("uid 1") == std::string::npos &&
                 (owner_name.empty() || what.find(owner_name) == std::string::npos))
          code = 14;
        else if (steady_clock::now() - start > 3s) code = 15;
      } catch (const std::exception& e) {
        what = e.what();
        code = 16;
      }
      (void)!::write(report.write_end, what.data(), what.size());
      return code;
    });
    report.close_write();
    std::string what;
    for (char c; (c = report.receive()) != '\0';) what += c;
    const int code = wait_exit(child);
    INFO("child exit code " << code
                            << " (10 acquired, 11 try_lock_for spun until its timeout, 12 wrong path, 13 not "
                               "EPERM, 14 owner not named, 15 too slow, 16 another exception, 142 alarm)");
    INFO("what(): " << what);
    CHECK(code == 0);
  };
  SECTION("acquire()") { run_as_nobody(false); }
  SECTION("try_lock_for(5s)") { run_as_nobody(true); }
  CHECK(read_file(path) == stale);
}

// ---------------------------------------------------------------------------
// #12: one inotify instance per process

TEST_CASE("hardening: 200 PIDLocks waited on at once by one process share one inotify instance, and all "
          "acquire once released",
          "[hardening]") {
  constexpr int count = 200;
  temp_dir dir;
  std::vector<fs::path> paths;
  for (int i = 0; i < count; ++i) paths.push_back(dir / ("lock-" + std::to_string(i)));
  {
    std::ifstream limit("/proc/sys/fs/inotify/max_user_instances");
    int instances = 0;
    limit >> instances;
    INFO("fs.inotify.max_user_instances = " << instances);
    CHECK(instances > 0);
    WARN("fs.inotify.max_user_instances = " << instances << " (shared by every process of this user)");
  }

  // One child holds all 200 until told to release them.
  pipe_pair ready;
  pipe_pair release;
  const pid_t holder = fork_child([&]() -> int {
    ready.close_read();
    release.close_write();
    std::vector<std::unique_ptr<PIDLock>> held;
    for (const auto& path : paths) {
      held.push_back(std::make_unique<PIDLock>(path));
      std::error_code ec;
      held.back()->acquire(ec);
      if (ec) {
        ready.send('F');
        return 2;
      }
    }
    ready.send('H');
    (void)release.receive();
    for (auto& lock : held) lock->release();
    return 0;
  });
  ready.close_write();
  release.close_read();
  struct reap {
    pipe_pair& release;
    pid_t pid;
    ~reap() {
      release.close_write();
      wait_exit(pid);
    }
  };
  REQUIRE(ready.receive() == 'H');

  // Each waiter's process_appears_alive is asked on every attempt (the
  // holder's records are of our PID space): once every waiter was asked, all
  // of them are waiting. The portable path never asks it (no same-machine
  // identity): there, each waiter counts itself in just before it waits,
  // and waking is by poll period, without inotify.
  std::vector<std::atomic<int>> asked(count);
  std::vector<std::unique_ptr<PIDLock>> locks;
  for (int i = 0; i < count; ++i) {
    Options options;
    options.process_appears_alive = [&asked, i](int) {
      ++asked[static_cast<std::size_t>(i)];
      return true;
    };
    locks.push_back(std::make_unique<PIDLock>(paths[static_cast<std::size_t>(i)], options));
  }
  std::atomic<int> acquired{0};
  std::vector<std::jthread> waiters;
  {
    const reap released{release, holder};  // before the waiters are joined, also on failure
    for (int i = 0; i < count; ++i)
      waiters.emplace_back([&, i] {
        if (!linux_extras) ++asked[static_cast<std::size_t>(i)];
        if (locks[static_cast<std::size_t>(i)]->try_lock_for(90s)) ++acquired;
      });
    REQUIRE(eventually(
        [&] {
          return std::all_of(asked.begin(), asked.end(), [](const std::atomic<int>& a) { return a.load() > 0; });
        },
        60s));
    const int instances = inotify_instances();
    INFO("inotify instances open in this process while 200 locks wait: " << instances);
    CHECK(instances <= (linux_extras ? 1 : 0));
    // ... so the user's other programs can still make one.
    const int probe = ::inotify_init1(IN_CLOEXEC);
    const int probe_errno = errno;
    INFO("inotify_init1() while they wait: " << (probe >= 0 ? "ok" : std::strerror(probe_errno)));
    CHECK(probe >= 0);
    if (probe >= 0) ::close(probe);
  }
  const auto released_at = steady_clock::now();
  for (auto& waiter : waiters) waiter.join();
  const auto took = steady_clock::now() - released_at;
  INFO("all waiters done " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                           << " ms after the release");
  CHECK(acquired.load() == count);
  CHECK(took < 30s);
}

// ---------------------------------------------------------------------------
// FUSE (bindfs) mounts: the network path

namespace {

bool is_mounted(const fs::path& target) {
  std::ifstream info("/proc/self/mountinfo");
  std::string line;
  const auto needle = " " + target.string() + " ";
  while (std::getline(info, line))
    if (line.find(needle) != std::string::npos) return true;
  return false;
}

// `bindfs -f SOURCE TARGET` in a child of ours, so that we know the daemon's
// pid (to SIGSTOP it). Unmounted on destruction, after a SIGCONT.
class bindfs_mount {
 public:
  bindfs_mount(const fs::path& source, const fs::path& target, const fs::path& errors) : target_(target) {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {
      reason_ = "no usable /dev/fuse";
      return;
    }
    if (std::system("command -v bindfs >/dev/null 2>&1") != 0) {
      reason_ = "bindfs is not installed (apt-get install bindfs)";
      return;
    }
    fs::create_directories(source);
    fs::create_directories(target);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int err = ::open(errors.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (err >= 0) ::dup2(err, 2);
      ::execlp("bindfs", "bindfs", "-f", source.c_str(), target.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (pid_ < 0) {
      reason_ = "fork failed";
      return;
    }
    if (!eventually([&] { return is_mounted(target_); }, 15s)) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
      pid_ = -1;
      reason_ = "cannot mount bindfs here: " + read_file(errors);
    }
  }
  ~bindfs_mount() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);
    const auto quoted = "'" + target_.string() + "'";
    (void)std::system(("fusermount3 -u " + quoted + " 2>/dev/null || fusermount -u " + quoted +
                       " 2>/dev/null || umount " + quoted + " 2>/dev/null || umount -l " + quoted)
                          .c_str());
    int status = 0;
    if (!eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 15s)) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
    }
  }
  bindfs_mount(const bindfs_mount&) = delete;
  bindfs_mount& operator=(const bindfs_mount&) = delete;

  bool mounted() const { return pid_ > 0; }
  const std::string& reason() const { return reason_; }
  void stop() const { ::kill(pid_, SIGSTOP); }
  void resume() const { ::kill(pid_, SIGCONT); }

 private:
  fs::path target_;
  pid_t pid_ = -1;
  std::string reason_;
};

// Runs a program with arguments, stdout and stderr into files; its exit
// code (128 + signal when killed), or 142 when it ran past limit.
int run_program(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err,
                const std::vector<std::pair<std::string, std::string>>& environment = {},
                std::chrono::seconds limit = 60s) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [name, value] : environment) ::setenv(name.c_str(), value.c_str(), 1);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o >= 0) ::dup2(o, 1);
    if (e >= 0) ::dup2(e, 2);
    ::alarm(static_cast<unsigned>(limit.count()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return wait_exit(pid);
}

}  // namespace

TEST_CASE("hardening: a lock on local disk keeps its lease for 3x the stale threshold while another lock "
          "of the same process sits on a FUSE mount whose daemon is stopped",
          "[hardening][netfs]") {
  temp_dir dir;
  fs::permissions(dir.path(), static_cast<fs::perms>(0755));
  const bindfs_mount mount(dir / "real", dir / "view", dir / "bindfs.err");
  if (!mount.mounted()) LOCKFILE_SKIP(mount.reason());
  const auto on_mount = dir / "view" / "a.lock";
  const auto on_disk = dir / "b.lock";
  const Options options{.lease_heartbeat_interval = 100ms, .lease_stale_threshold = 600ms};

  // The holder: A on the mount, B on local disk. It answers '?' with B.held().
  pipe_pair ready;
  pipe_pair ask;
  pipe_pair answer;
  const pid_t holder = fork_child([&]() -> int {
    ready.close_read();
    ask.close_write();
    answer.close_read();
    PIDLock a(on_mount, options);
    PIDLock b(on_disk, options);
    std::error_code ec;
    a.acquire(ec);
    if (!ec) b.acquire(ec);
    ready.send(ec ? 'F' : 'H');
    if (ec) return 2;
    for (char c; (c = ask.receive()) == '?';) answer.send(b.held() ? 'Y' : 'N');
    ::_exit(0);  // leave A and B to the parent's cleanup: the mount may still be slow
  });
  ready.close_write();
  ask.close_read();
  answer.close_write();
  struct reap {
    const bindfs_mount& mount;
    pipe_pair& ask;
    pid_t pid;
    ~reap() {
      mount.resume();  // first: everything that touches the mount waits for the daemon
      ask.close_write();
      if (!eventually([&] { return ::waitpid(pid, nullptr, WNOHANG) == pid; }, 20s)) {
        ::kill(pid, SIGKILL);
        wait_exit(pid);
      }
    }
  } reaped{mount, ask, holder};
  REQUIRE(ready.receive() == 'H');

  mount.stop();
  // The contender stays on local disk: anything that touches the mount now hangs.
  PIDLock contender(on_disk, options);
  const auto start = steady_clock::now();
  const bool took_over = contender.try_lock_for(3 * options.lease_stale_threshold);
  const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - start);
  INFO("the contender " << (took_over ? "acquired" : "did not acquire") << " B, " << after.count()
                        << " ms after the daemon was stopped");
  CHECK_FALSE(took_over);
  ask.send('?');
  CHECK(answer.receive() == 'Y');  // the holder still believes it holds B
  if (took_over) contender.release();
}

TEST_CASE("hardening: a static PIDLock on a FUSE (network-path) lock is released at exit without touching "
          "freed thread_local state",
          "[hardening][netfs]") {
  temp_dir dir;
  fs::permissions(dir.path(), static_cast<fs::perms>(0755));
  const bindfs_mount mount(dir / "real", dir / "view", dir / "bindfs.err");
  if (!mount.mounted()) LOCKFILE_SKIP(mount.reason());
#if !defined(LOCKFILE_STATIC_LOCK_AT_EXIT_ASAN)
  WARN("the program is not built with AddressSanitizer here: only its exit code and the file are checked");
#endif
  const int code = run_program({LOCKFILE_STATIC_LOCK_AT_EXIT, (dir / "view" / "app.lock").string()},
                               dir / "out", dir / "err",
                               {{"ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0:exitcode=86"}});
  const auto errors = read_file(dir / "err");
  INFO("exit code " << code << " (86: AddressSanitizer reported an error); stderr:\n" << errors);
  CHECK(read_file(dir / "out") == "held\n");
  CHECK(code == 0);
  CHECK(errors.find("AddressSanitizer") == std::string::npos);
  CHECK_FALSE(fs::exists(dir / "real" / "app.lock"));  // released at exit
}
