// Losing a lease while held: the file deleted, replaced or overwritten, or
// the holder paused past its stale threshold. held() turns false,
// on_lease_lost runs once, and release() leaves the new file alone.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <atomic>

using namespace lockfile_test;
using lockfile::PIDLock;

namespace {

struct loss_counter {
  std::atomic<int> calls{0};
  lockfile::Options options() {
    return {.lease_heartbeat_interval = 10ms,
            .lease_stale_threshold = 2s,
            .on_lease_lost = [this] { ++calls; }};
  }
};

// Waits until the lock notices the loss and its callback has run, then a few
// more heartbeats to see that the callback does not run again.
void expect_lost_once(PIDLock& lock, loss_counter& counter) {
  CHECK(eventually([&] { return !lock.held() && counter.calls.load() > 0; }));
  std::this_thread::sleep_for(100ms);  // ten heartbeats: no second call
  CHECK(counter.calls.load() == 1);
  CHECK_FALSE(lock.held());
}

}  // namespace

TEST_CASE("lease lost: the lock file is deleted while held") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  loss_counter counter;
  PIDLock lock(path, counter.options());
  lock.acquire();
  fs::remove(path);
  expect_lost_once(lock, counter);
  lock.release();  // not an error
  CHECK_FALSE(fs::exists(path));
  // The lock can be taken again, and renews normally.
  lock.acquire();
  CHECK(lock.held());
}

TEST_CASE("lease lost: the lock file is replaced by another owner's (rename over it)") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  loss_counter counter;
  PIDLock lock(path, counter.options());
  lock.acquire();
  const auto replacement = foreign_record(std::chrono::system_clock::now(), 4242, "usurper");
  write_file(dir / "other", replacement);
  fs::rename(dir / "other", path);
  expect_lost_once(lock, counter);
  lock.release();
  CHECK(read_file(path) == replacement);  // release is fenced
}

TEST_CASE("lease lost: the lock file is overwritten in place (as the Go package's tests do)") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  loss_counter counter;
  PIDLock lock(path, counter.options());
  lock.acquire();
  const auto inode = fs::hard_link_count(path);
  const auto replacement = foreign_record(std::chrono::system_clock::now(), 4242, "usurper");
  write_file(path, replacement);  // same inode, truncated and rewritten
  CHECK(fs::hard_link_count(path) == inode);
  expect_lost_once(lock, counter);
  lock.release();
  CHECK(read_file(path) == replacement);
}

TEST_CASE("lease renewal advances the heartbeat in place") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock lock(path, {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 2s});
  lock.acquire();
  const auto first = lockfile::parse_lease(read_file(path));
  REQUIRE(first);
  CHECK(eventually([&] {
    const auto now = lockfile::parse_lease(read_file(path));
    return now && now->heartbeat > first->heartbeat;
  }));
  const auto later = lockfile::parse_lease(read_file(path));
  REQUIRE(later);
  CHECK(later->owner_id == first->owner_id);
  CHECK(lock.held());
}

TEST_CASE("a holder paused past its stale threshold loses to a waiter and learns it via on_lease_lost") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  const auto marker = dir / "holder-lost";
  const auto record_path = dir / "holder-record";
  lockfile::Options options{.lease_heartbeat_interval = 20ms,
                            .lease_stale_threshold = 400ms,
                            .on_lease_lost = [&] { write_file(marker, "lost"); }};
  holder_process holder(path, options);
  REQUIRE(holder.acquired());
  holder.signal(SIGSTOP);

  PIDLock waiter(path, {.lease_heartbeat_interval = 20ms, .lease_stale_threshold = 400ms});
  REQUIRE(waiter.try_lock_for(10s));
  const auto ours = read_file(path);

  holder.signal(SIGCONT);
  CHECK(eventually([&] { return fs::exists(marker); }));
  CHECK(holder.finish() == 0);  // its release is a no-op, not an error
  CHECK(waiter.held());
  const auto now = lockfile::parse_lease(read_file(path));
  REQUIRE(now);
  CHECK(now->owner_id == lockfile::parse_lease(ours)->owner_id);  // our file survived its release
}

TEST_CASE("on_lease_lost may call release() and acquire() on its own lock") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  std::atomic<int> calls{0};
  std::atomic<bool> reacquired{false};
  PIDLock* self = nullptr;
  PIDLock lock(path, {.lease_heartbeat_interval = 10ms,
                      .lease_stale_threshold = 2s,
                      .on_lease_lost = [&] {
                        ++calls;
                        self->release();
                        std::error_code ec;
                        self->acquire(ec);
                        reacquired = !ec;
                      }});
  self = &lock;
  lock.acquire();
  fs::remove(path);
  CHECK(eventually([&] { return reacquired.load(); }));
  CHECK(lock.held());
  CHECK(fs::exists(path));
  CHECK(calls.load() == 1);
  lock.release();
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("a holder that releases before its renewal noticed the loss is still told, by release()") {
  // A holder resumed from a pause may finish its work and release before
  // the next heartbeat: release() then finds the file replaced, and must not
  // leave the loss untold.
  temp_dir dir;
  const auto path = dir / "app.lock";
  std::atomic<int> calls{0};
  PIDLock lock(path, {.lease_heartbeat_interval = 2s,  // no renewal during this test
                      .lease_stale_threshold = 10s,
                      .on_lease_lost = [&] { ++calls; }});
  lock.acquire();
  const auto replacement = foreign_record(std::chrono::system_clock::now(), 4242, "usurper");
  write_file(dir / "other", replacement);
  fs::rename(dir / "other", path);
  CHECK(lock.held());  // not noticed yet
  lock.release();
  CHECK(calls.load() == 1);  // told before release() returned
  CHECK(read_file(path) == replacement);
  CHECK_FALSE(lock.held());
}
