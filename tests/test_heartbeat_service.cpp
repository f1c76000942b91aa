// The process-wide heartbeat service: one renewal thread for every held
// lease, callbacks off the renewal path, and fork() semantics.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>

using namespace lockfile_test;
using lockfile::PIDLock;

namespace {

// ThreadSanitizer's runtime starts a thread of its own.
#if defined(__SANITIZE_THREAD__)
constexpr int sanitizer_threads = 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr int sanitizer_threads = 1;
#else
constexpr int sanitizer_threads = 0;
#endif
#else
constexpr int sanitizer_threads = 0;
#endif

int thread_count() {
  int count = 0;
  for ([[maybe_unused]] const auto& task : fs::directory_iterator("/proc/self/task")) ++count;
  return count;
}

std::optional<lockfile::Lease> lease_at(const fs::path& path) { return lockfile::parse_lease(read_file(path)); }

// True once the heartbeat in path is later than it is now.
bool heartbeat_advances(const fs::path& path, std::chrono::milliseconds limit = 10s) {
  const auto first = lease_at(path);
  if (!first) return false;
  return eventually(
      [&] {
        const auto now = lease_at(path);
        return now && now->heartbeat > first->heartbeat;
      },
      limit);
}

}  // namespace

TEST_CASE("holding 200 locks adds at most two threads to the process (one renewer, one notifier)") {
  temp_dir dir;
  const int before = thread_count();
  std::vector<std::unique_ptr<PIDLock>> locks;
  for (int i = 0; i < 200; ++i) {
    locks.push_back(std::make_unique<PIDLock>(dir / ("lock-" + std::to_string(i)),
                                              lockfile::Options{.lease_heartbeat_interval = 20ms}));
    locks.back()->acquire();
  }
  CHECK(thread_count() - before <= 2 + sanitizer_threads);
  // They are ours, by name.
  std::set<std::string> names;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    auto name = read_file(task.path() / "comm");
    if (!name.empty() && name.back() == '\n') name.pop_back();
    if (name.rfind("lockfile-", 0) == 0) names.insert(name);
  }
  // (The portable path names no threads: pthread_setname_np differs between systems.)
  CHECK(names == (linux_extras ? std::set<std::string>{"lockfile-notify", "lockfile-renew"}
                               : std::set<std::string>{}));
  // And all of them are renewed.
  CHECK(heartbeat_advances(dir / "lock-0"));
  CHECK(heartbeat_advances(dir / "lock-199"));
  locks.clear();
  CHECK(dir.entries().empty());
}

TEST_CASE("constructing a PIDLock starts no thread, only acquiring does") {
  temp_dir dir;
  const int before = thread_count();
  PIDLock lock(dir / "app.lock");
  CHECK(thread_count() == before);
  CHECK(lockfile::inspect(dir / "app.lock").state == lockfile::LockState::free);
  CHECK(thread_count() == before);
}

TEST_CASE("a blocking on_lease_lost callback delays no other lock's renewal") {
  temp_dir dir;
  std::mutex mutex;
  std::condition_variable cv;
  bool callback_entered = false;
  bool let_go = false;
  PIDLock blocked(dir / "blocked.lock",
                  {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s, .on_lease_lost = [&] {
                     std::unique_lock guard(mutex);
                     callback_entered = true;
                     cv.notify_all();
                     cv.wait_for(guard, 30s, [&] { return let_go; });  // "blocks for seconds"
                   }});
  PIDLock busy(dir / "busy.lock", {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s});
  blocked.acquire();
  busy.acquire();
  fs::remove(dir / "blocked.lock");
  {
    std::unique_lock guard(mutex);
    REQUIRE(cv.wait_for(guard, 10s, [&] { return callback_entered; }));
  }
  // The callback is stuck; the other lease keeps being renewed.
  CHECK(heartbeat_advances(dir / "busy.lock"));
  CHECK(heartbeat_advances(dir / "busy.lock"));
  CHECK(busy.held());
  {
    std::lock_guard guard(mutex);
    let_go = true;
  }
  cv.notify_all();
}

TEST_CASE("fork: the child does not own the parent's lock, and renews its own locks itself") {
  temp_dir dir;
  const auto parents = dir / "parent.lock";
  const auto childs = dir / "child.lock";
  PIDLock lock(parents, {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s});
  lock.acquire();
  const auto parent_record = lease_at(parents);
  REQUIRE(parent_record);

  const pid_t child = fork_child([&] {
    if (lock.held()) return 1;
    std::error_code ec;
    lock.release(ec);  // a no-op in the child
    if (ec) return 2;
    const auto still = lease_at(parents);
    if (!still || still->owner_id != parent_record->owner_id) return 3;
    // The child's own lock, renewed by the child's own service.
    PIDLock own(childs, {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s});
    own.acquire(ec);
    if (ec) return 4;
    const auto record = lease_at(childs);
    if (!record || record->pid != ::getpid()) return 5;
    if (!heartbeat_advances(childs)) return 6;
    own.release();
    // And the parent's lock object, destroyed in the child, leaves the file.
    auto* copy = new PIDLock(parents);  // (a separate object: the parent's own is what matters)
    delete copy;
    return 0;
  });
  CHECK(wait_exit(child) == 0);
  CHECK(lock.held());
  const auto after = lease_at(parents);
  REQUIRE(after);
  CHECK(after->owner_id == parent_record->owner_id);
  CHECK(heartbeat_advances(parents));  // the parent's renewal goes on
  CHECK_FALSE(fs::exists(childs));
}

TEST_CASE("fork: the child's destructor of an inherited, held PIDLock leaves the parent's file") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  auto lock = std::make_unique<PIDLock>(path);
  lock->acquire();
  const auto record = read_file(path);
  const pid_t child = fork_child([&] {
    lock.reset();  // runs ~PIDLock in the child
    return fs::exists(path) ? 0 : 1;
  });
  CHECK(wait_exit(child) == 0);
  CHECK(lock->held());
  CHECK(lease_at(path)->owner_id == lockfile::parse_lease(record)->owner_id);
}

TEST_CASE("lock() from a second thread waits until the first thread unlocks the same PIDLock") {
  temp_dir dir;
  PIDLock lock(dir / "app.lock");
  lock.lock();
  std::atomic<bool> acquired{false};
  std::thread second([&] {
    lock.lock();
    acquired = true;
  });
  CHECK_FALSE(lock.try_lock());
  CHECK_FALSE(acquired.load());
  lock.unlock();
  second.join();
  CHECK(acquired.load());
  CHECK(lock.held());
}
