// Acquire, release and the stale rules, with real processes and real files.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <atomic>
#include <mutex>

using namespace lockfile_test;
using lockfile::LockState;
using lockfile::PIDLock;

namespace {

// Short lease settings for tests that wait for staleness; generous enough
// that a loaded 2-core machine does not miss a heartbeat.
lockfile::Options quick() {
  return {.lease_heartbeat_interval = 20ms, .lease_stale_threshold = 400ms};
}

}  // namespace

TEST_CASE("acquire creates a complete record and release removes it") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock lock(path);
  CHECK_FALSE(lock.held());
  lock.acquire();
  CHECK(lock.held());
  CHECK(lock.path() == path);

  const auto bytes = read_file(path);
  REQUIRE(!bytes.empty());
  CHECK(bytes.back() == '\n');
  const auto lease = lockfile::parse_lease(bytes);
  REQUIRE(lease);
  CHECK(lease->pid == ::getpid());
  CHECK_FALSE(lease->host.empty());
  CHECK(lease->stale_threshold == std::chrono::milliseconds(3000));
  CHECK(lockfile::inspect(path).state == LockState::held);
  CHECK(lock.inspect().state == LockState::held);

  lock.release();
  CHECK_FALSE(lock.held());
  CHECK_FALSE(fs::exists(path));
  CHECK(dir.entries().empty());
  lock.release();  // a second release is a no-op
  CHECK(lockfile::inspect(path).state == LockState::free);
}

TEST_CASE("held by another process: both error forms name the holder") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path);
  REQUIRE(holder.acquired());
  const auto before = read_file(path);

  PIDLock lock(path);
  SECTION("throwing form: lock_held_error with the holder's pid and the path") {
    try {
      lock.acquire();
      FAIL("acquire succeeded while another process held the lock");
    } catch (const lockfile::lock_held_error& e) {
      CHECK(e.code() == lockfile::errc::lock_held);
      CHECK(e.path1() == path);
      REQUIRE(e.holder());
      CHECK(e.holder()->pid == holder.pid());
      const std::string what = e.what();
      CHECK(what.find("pid " + std::to_string(holder.pid())) != std::string::npos);
      CHECK(what.find(path.string()) != std::string::npos);
    }
  }
  SECTION("error_code form") {
    std::error_code ec;
    lock.acquire(ec);
    CHECK(ec == lockfile::errc::lock_held);
    CHECK(ec == std::errc::resource_unavailable_try_again);
  }
  SECTION("try_lock and try_lock_for report false") {
    CHECK_FALSE(lock.try_lock());
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(lock.try_lock_for(150ms));
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 150ms);
    CHECK(waited < 5s);
  }
  SECTION("inspect reports the holder") {
    const auto status = lockfile::inspect(path);
    CHECK(status.state == LockState::held);
    REQUIRE(status.lease);
    CHECK(status.lease->pid == holder.pid());
  }
  CHECK_FALSE(lock.held());
  CHECK(read_file(path) == before);  // the holder's file is untouched
  CHECK(holder.finish() == 0);
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("held_error replaces the code of a held lock, {} keeps the default") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path);
  REQUIRE(holder.acquired());

  const auto custom = std::make_error_code(std::errc::device_or_resource_busy);
  PIDLock lock(path, {.held_error = custom});
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == custom);
  try {
    lock.acquire();
    FAIL("acquire succeeded");
  } catch (const lockfile::lock_held_error& e) {
    CHECK(e.code() == custom);
  }

  PIDLock defaulted(path, {.held_error = std::error_code{}});
  defaulted.acquire(ec);
  CHECK(ec == lockfile::errc::lock_held);
}

TEST_CASE("two PIDLocks in one process exclude each other") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock first(path);
  PIDLock second(path);
  first.acquire();
  CHECK_FALSE(second.try_lock());
  first.release();
  CHECK(second.try_lock());
  CHECK_FALSE(first.try_lock());
}

TEST_CASE("acquire on a PIDLock that already holds is an error, try_lock is false") {
  temp_dir dir;
  PIDLock lock(dir / "app.lock");
  lock.acquire();
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == std::errc::resource_deadlock_would_occur);
  CHECK_FALSE(lock.try_lock());
  CHECK(lock.held());  // still ours
}

TEST_CASE("a stale lease from a crashed owner on another host is taken over") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  write_file(path, foreign_record(std::chrono::system_clock::now() - 10s));
  PIDLock lock(path);
  CHECK(lockfile::inspect(path).state == LockState::stale);
  lock.acquire();
  const auto lease = lockfile::parse_lease(read_file(path));
  REQUIRE(lease);
  CHECK(lease->pid == ::getpid());
}

TEST_CASE("a lease is fresh until the larger of both stale thresholds") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  lockfile::Lease lease;
  lease.owner_id = "slow-owner";
  lease.pid = 999999;
  lease.heartbeat = std::chrono::system_clock::now() - 5s;
  lease.stale_threshold = 60s;  // the owner expects 60 s
  write_file(path, lockfile::format_lease(lease));
  PIDLock lock(path, {.lease_stale_threshold = 3s});
  CHECK_FALSE(lock.try_lock());
  lease.heartbeat = std::chrono::system_clock::now() - 61s;
  write_file(path, lockfile::format_lease(lease));
  // A fresh lock: this one saw the bytes change, and so judges the writer
  // alive by observation whatever the timestamps say.
  CHECK_FALSE(lock.try_lock());
  PIDLock fresh(path, {.lease_stale_threshold = 3s});
  CHECK(fresh.try_lock());
}

TEST_CASE("an invalid lock file is held until invalid_lock_stale_threshold after its mtime") {
  // Only what a crashed writer of the format leaves is invalid (and so
  // reclaimed); anything else is foreign (test_regressions.cpp).
  temp_dir dir;
  const auto path = dir / "app.lock";
  const std::string garbage = GENERATE(as<std::string>{}, "", " \n", "{\"version\":1,\"ownerID\":\"x\"",
                                       std::string("\0\0\0\0", 4), "{\"pi", "{\"pid\":7,\"other\":1}");
  write_file(path, garbage);
  PIDLock lock(path);
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == lockfile::errc::lock_held);
  CHECK(read_file(path) == garbage);
  const auto status = lockfile::inspect(path);
  CHECK(status.state == LockState::held);
  CHECK_FALSE(status.lease);

  set_mtime(path, std::chrono::system_clock::now() - 1300ms);
  CHECK(lockfile::inspect(path).state == LockState::stale);
  // A lock that has watched the file counts the touch (a new ctime) as a
  // change, a sign of life: one that has not judges by the mtime alone.
  PIDLock fresh(path);
  fresh.acquire();
  CHECK(lockfile::parse_lease(read_file(path)));
}

TEST_CASE("an oversized lock file is invalid even when it starts with a valid record") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  auto bytes = foreign_record(std::chrono::system_clock::now());
  bytes.append(70 * 1024, ' ');
  write_file(path, bytes);
  auto status = lockfile::inspect(path);
  CHECK(status.state == LockState::held);
  CHECK_FALSE(status.lease);
  set_mtime(path, std::chrono::system_clock::now() - 2s);
  PIDLock lock(path);
  lock.acquire();
}

TEST_CASE("a heartbeat far in the future (clock skew) is judged by the file's mtime") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  write_file(path, foreign_record(std::chrono::system_clock::now() + 1h));
  PIDLock lock(path);
  CHECK_FALSE(PIDLock(path).try_lock());  // fresh mtime: held (another lock: setting the mtime is a change to one that watched)
  CHECK(lockfile::inspect(path).state == LockState::held);
  set_mtime(path, std::chrono::system_clock::now() - 4s);
  CHECK(lockfile::inspect(path).state == LockState::stale);
  CHECK(lock.try_lock());
}

TEST_CASE("missing parent directories are created with directory_mode, the file with file_mode") {
  temp_dir dir;
  const auto path = dir.path() / "a" / "b" / "c" / "app.lock";
  const auto old_umask = ::umask(0);
  {
    PIDLock lock(path, {.file_mode = static_cast<fs::perms>(0640),
                        .directory_mode = static_cast<fs::perms>(0750)});
    lock.acquire();
    for (const auto& level : {dir.path() / "a", dir.path() / "a" / "b", dir.path() / "a" / "b" / "c"}) {
      INFO(level);
      CHECK(fs::status(level).permissions() == static_cast<fs::perms>(0750));
    }
    CHECK(fs::status(path).permissions() == static_cast<fs::perms>(0640));
  }
  ::umask(077);  // the umask applies: the library never chmods
  {
    PIDLock lock(dir.path() / "x" / "app.lock");
    lock.acquire();
    CHECK(fs::status(dir.path() / "x").permissions() == static_cast<fs::perms>(0700));
    CHECK(fs::status(dir.path() / "x" / "app.lock").permissions() == static_cast<fs::perms>(0600));
  }
  ::umask(old_umask);
}

TEST_CASE("the lock's descriptor is not inherited by an exec'd child") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock lock(path);
  lock.acquire();

  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  const std::string lock_id = " " + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + "\n";

  // "FD DEVICE:INODE" lines for every descriptor the helper has open.
  auto descriptors_of = [](const char* program) {
    pipe_pair out;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(out.write_end, STDOUT_FILENO);
      ::execl(program, program, "fds", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    out.close_write();
    std::string text;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(out.read_end, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<std::size_t>(n));
    CHECK(wait_exit(pid) == 0);
    return text;
  };
  const auto child_fds = descriptors_of(LOCKFILE_TEST_HELPER);
  INFO("lock file " << lock_id << "child descriptors:\n" << child_fds);
  CHECK(child_fds.find('\n') != std::string::npos);
  CHECK(child_fds.find(lock_id) == std::string::npos);

  // The check above would see a leak: this process does have it open.
  std::string own;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    struct stat fd_st {};
    if (::stat(entry.path().c_str(), &fd_st) == 0)
      own += " " + std::to_string(fd_st.st_dev) + ":" + std::to_string(fd_st.st_ino) + "\n";
  }
  CHECK(own.find(lock_id) != std::string::npos);
}

TEST_CASE("no temporary or protocol files are left after many cycles") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock a(path);
  PIDLock b(path);
  for (int i = 0; i < 200; ++i) {
    PIDLock& first = i % 2 ? a : b;
    PIDLock& second = i % 2 ? b : a;
    first.acquire();
    CHECK_FALSE(second.try_lock());
    first.release();
  }
  // Reclamation leaves nothing behind either.
  for (int i = 0; i < 20; ++i) {
    write_file(path, foreign_record(std::chrono::system_clock::now() - 1h));
    a.acquire();
    a.release();
  }
  CHECK(dir.entries().empty());
}

TEST_CASE("lock() waits until the holder releases") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path);
  REQUIRE(holder.acquired());
  PIDLock lock(path);
  std::thread releaser([&] { holder.finish(); });
  lock.lock();  // returns once the holder's release is seen
  CHECK(lock.held());
  releaser.join();
  lock.unlock();
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("lock() on a crashed holder's lease acquires once it goes stale") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  // A record without identity fields (another host, or the Go package):
  // only the lease rule applies.
  const auto heartbeat = std::chrono::system_clock::now();
  write_file(path, foreign_record(heartbeat));
  PIDLock lock(path, quick());
  REQUIRE(lock.try_lock_for(10s));
  CHECK(std::chrono::system_clock::now() - heartbeat >= 400ms);  // not before the threshold
}

TEST_CASE("a waiting lock returns false when stop is requested") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path);
  REQUIRE(holder.acquired());
  PIDLock lock(path);
  std::atomic<bool> result{true};
  std::jthread waiter([&](std::stop_token stop) { result = lock.lock(stop); });
  waiter.request_stop();
  waiter.join();
  CHECK_FALSE(result.load());
  CHECK_FALSE(lock.held());

  std::stop_source source;
  source.request_stop();
  CHECK_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + 10s, source.get_token()));
}

TEST_CASE("std::unique_lock, std::lock_guard and std::scoped_lock work with PIDLock") {
  temp_dir dir;
  PIDLock a(dir / "a.lock");
  PIDLock b(dir / "b.lock");
  {
    std::scoped_lock both(a, b);
    CHECK(a.held());
    CHECK(b.held());
  }
  CHECK_FALSE(a.held());
  CHECK(dir.entries().empty());
  {
    std::unique_lock guard(a, std::try_to_lock);
    CHECK(guard.owns_lock());
    std::unique_lock timed(b, std::defer_lock);
    CHECK(timed.try_lock_for(1s));
  }
  {
    std::lock_guard guard(a);
    CHECK(a.held());
  }
  CHECK(dir.entries().empty());
}

TEST_CASE("a relative path keeps naming the same file after chdir") {
  temp_dir dir;
  const auto old_cwd = fs::current_path();
  fs::current_path(dir.path());
  PIDLock lock("app.lock");
  lock.acquire();
  fs::current_path(old_cwd);
  lock.release();
  CHECK(dir.entries().empty());
}
