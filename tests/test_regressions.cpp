// One regression test per bug found in review or in use. Each names the bug
// it guards; each failed before its fix.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <sys/file.h>

#include <atomic>
#include <charconv>
#include <memory>
#include <mutex>
#include <random>

using namespace lockfile_test;
using lockfile::PIDLock;

TEST_CASE("regression: a lease acquired after every earlier lease was released is still renewed") {
  // The renewal thread, idle with nothing to renew, once slept forever and
  // never renewed the next lease.
  temp_dir dir;
  {
    PIDLock first(dir / "first.lock", {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s});
    first.acquire();
    CHECK(eventually([&] {
      const auto lease = lockfile::parse_lease(read_file(dir / "first.lock"));
      return lease && std::chrono::system_clock::now() - lease->heartbeat < 1s &&
             lease->heartbeat > std::chrono::system_clock::now() - 5ms;
    }));
  }
  std::this_thread::sleep_for(30ms);  // let the thread find nothing to renew
  const auto path = dir / "second.lock";
  PIDLock second(path, {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s});
  second.acquire();
  const auto first = lockfile::parse_lease(read_file(path));
  REQUIRE(first);
  CHECK(eventually([&] {
    const auto now = lockfile::parse_lease(read_file(path));
    return now && now->heartbeat > first->heartbeat;
  }));
}

TEST_CASE("regression: a lock file in a directory reached through a symbolic link can be created") {
  // O_NOFOLLOW once applied to the directory opened for O_TMPFILE, so
  // /var/lock/x.lock (with /var/lock -> /run/lock) failed with ENOTDIR.
  temp_dir dir;
  fs::create_directory(dir / "real");
  fs::create_directory_symlink(dir / "real", dir / "link");
  PIDLock lock(dir.path() / "link" / "app.lock");
  lock.acquire();
  CHECK(fs::exists(dir.path() / "real" / "app.lock"));
  lock.release();
  CHECK(fs::is_empty(dir / "real"));
}

TEST_CASE("regression: unlock() never throws, so std::lock_guard cannot terminate the process") {
  // A release that stays busy used to throw out of unlock(), that is out of
  // lock_guard's destructor. A foreign flock alone no longer keeps a release
  // busy (it is removed through its claim instead); a live claim of its
  // generation by another process does, on every file system.
  temp_dir dir;
  const auto path = dir / "app.lock";
  // The claim's name: ".<name>.<FNV-1a of the ownerID, hex>.claim".
  const auto block_release = [&](const fs::path& lock_file) {
    const auto lease = lockfile::parse_lease(read_file(lock_file));
    REQUIRE(lease);
    std::uint64_t hash = 14695981039346656037ULL;
    for (const char c : lease->owner_id) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    char token[17] = {};
    std::to_chars(token, token + 16, hash, 16);
    write_file(lock_file.parent_path() / ("." + lock_file.filename().string() + "." + token + ".claim"),
               foreign_record(std::chrono::system_clock::now()));
  };
  PIDLock lock(path, {.acquire_retry_limit = 2, .acquire_retry_delay = 1ms});
  int blocker = -1;
  {
    std::lock_guard guard(lock);
    blocker = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(::flock(blocker, LOCK_SH) == 0);
    block_release(path);
  }
  CHECK_FALSE(lock.held());
  CHECK(fs::exists(path));  // left to go stale, not removed blindly
  ::close(blocker);

  // release() itself reports the same situation as an error.
  PIDLock other(dir / "other.lock", {.acquire_retry_limit = 2, .acquire_retry_delay = 1ms});
  other.acquire();
  blocker = ::open((dir / "other.lock").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(::flock(blocker, LOCK_SH) == 0);
  block_release(dir / "other.lock");
  CHECK_THROWS_AS(other.release(), fs::filesystem_error);
  ::close(blocker);
}

TEST_CASE("regression: the library's threads block every signal the application may want") {
  // They inherited the caller's mask, so a SIGTERM the application blocked
  // in its own threads (to read it from a signalfd) killed the process.
  temp_dir dir;
  PIDLock lock(dir / "app.lock");
  lock.acquire();
  const auto main_tid = std::to_string(::getpid());
  int library_threads = 0;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == main_tid) continue;
    const auto status = read_file(task.path() / "status");
    const auto at = status.find("SigBlk:");
    REQUIRE(at != std::string::npos);
    const auto mask = std::stoull(status.substr(at + 7), nullptr, 16);
    INFO(task.path() << " SigBlk " << std::hex << mask);
    CHECK((mask >> (SIGTERM - 1)) & 1);
    CHECK((mask >> (SIGINT - 1)) & 1);
    CHECK((mask >> (SIGHUP - 1)) & 1);
    ++library_threads;
  }
  CHECK(library_threads >= 1);
}

TEST_CASE("regression: try_lock_for(milliseconds::max()) waits instead of overflowing") {
  // now + max() overflowed (undefined behaviour) and returned false at once.
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path);
  REQUIRE(holder.acquired());
  PIDLock lock(path);
  std::thread releaser([&] { holder.finish(); });
  CHECK(lock.try_lock_for(std::chrono::milliseconds::max()));
  releaser.join();
  lock.unlock();
  // The other extreme: a deadline long past allows one attempt.
  holder_process again(path);
  REQUIRE(again.acquired());
  CHECK_FALSE(lock.try_lock_until(std::chrono::system_clock::time_point::min()));
  CHECK_FALSE(lock.try_lock_for(std::chrono::milliseconds::min()));
}

TEST_CASE("regression: acquire(error_code&) reports a throwing process_appears_alive instead of terminating") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_process holder(path);  // a record with our boot and PID namespace: the override is consulted
  REQUIRE(holder.acquired());
  PIDLock lock(path, {.process_appears_alive = [](int) -> bool { throw std::runtime_error("probe failed"); }});
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec);
  CHECK_FALSE(lock.held());
  CHECK_THROWS_AS(lock.acquire(), std::runtime_error);  // the throwing form passes it on
}

TEST_CASE("regression: on_lease_lost never runs after release() or the destructor returned") {
  // A loss declared between release()'s cancellation of callbacks and its
  // deactivation of the lease queued a callback that ran on a dead object.
  // A race: before the fix this loop caught it in about half of the runs.
  temp_dir dir;
  const auto path = dir / "app.lock";
  std::mt19937 random(7);
  std::atomic<int> late{0};
  for (int i = 0; i < 1500; ++i) {
    auto destroyed = std::make_shared<std::atomic<bool>>(false);
    auto lock = std::make_unique<PIDLock>(
        path, lockfile::Options{.lease_heartbeat_interval = 1ms,
                                .lease_stale_threshold = 5ms,
                                .on_lease_lost = [destroyed, &late] {
                                  if (destroyed->load()) ++late;
                                }});
    lock->acquire();
    fs::remove(path);
    // Aim at the moment the loss is declared: a tick finds the file gone,
    // a second check one millisecond later confirms it.
    std::this_thread::sleep_for(std::chrono::microseconds(500 + random() % 2500));
    lock.reset();
    destroyed->store(true);
  }
  std::this_thread::sleep_for(20ms);  // any straggling callback would run now
  CHECK(late.load() == 0);
}
