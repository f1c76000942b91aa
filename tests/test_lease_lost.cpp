// Losing a lease while held: the file deleted, replaced or overwritten, or
// the holder paused past its stale threshold. held() turns false,
// on_lease_lost runs once, and release() leaves the new file alone.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <poll.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>

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
  const auto inode_of = [&] {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  const auto inode = inode_of();
  const auto replacement = foreign_record(std::chrono::system_clock::now(), 4242, "usurper");
  write_file(path, replacement);  // same inode, truncated and rewritten
  CHECK(inode_of() == inode);
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

namespace {

// The helper binary in hold-report mode under the pwrite-failing shim:
// it holds the lock and prints "lost" when told, "held=N" at the end.
class faulty_holder {
 public:
  faulty_holder(const fs::path& path, const fs::path& flag, long stale_ms, long heartbeat_ms) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(to_child_.read_end, STDIN_FILENO);
      ::dup2(from_child_.write_end, STDOUT_FILENO);
      ::setenv("LD_PRELOAD", LOCKFILE_FAIL_PWRITE_SHIM, 1);
      ::setenv("LOCKFILE_FAIL_PWRITE_WHILE", flag.c_str(), 1);
      const char* asan = std::getenv("ASAN_OPTIONS");
      const std::string options = std::string(asan ? asan : "") + ":verify_asan_link_order=0";
      ::setenv("ASAN_OPTIONS", options.c_str(), 1);
      const auto stale = std::to_string(stale_ms);
      const auto heartbeat = std::to_string(heartbeat_ms);
      ::execl(LOCKFILE_TEST_HELPER, LOCKFILE_TEST_HELPER, "hold-report", path.c_str(), stale.c_str(),
              heartbeat.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    to_child_.close_read();
    from_child_.close_write();
  }
  ~faulty_holder() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
    }
  }
  faulty_holder(const faulty_holder&) = delete;
  faulty_holder& operator=(const faulty_holder&) = delete;

  // The next line it prints, or "" after the deadline.
  std::string line(std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      const auto end = buffer_.find('\n');
      if (end != std::string::npos) {
        auto text = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        return text;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd ready{from_child_.read_end, POLLIN, 0};
      if (::poll(&ready, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[256];
      const ssize_t n = ::read(from_child_.read_end, chunk, sizeof chunk);
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // Ends its hold: its last line says whether it still held the lock.
  std::string finish() {
    to_child_.close_write();
    auto last = line();
    if (last == "lost") last = line();
    const int code = wait_exit(pid_);
    pid_ = -1;
    return code == 0 ? last : "exit " + std::to_string(code);
  }

 private:
  pipe_pair to_child_;
  pipe_pair from_child_;
  std::string buffer_;
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("lease renewal rides out a transient EIO, and gives up only after stale - interval of failures") {
  // DESIGN.md: a failed write (EIO, ESTALE, ENOSPC) is retried on the next
  // tick; ownership is declared lost only when no renewal has succeeded for
  // lease_stale_threshold - lease_heartbeat_interval.
  temp_dir dir;
  const auto path = dir / "app.lock";
  const auto flag = dir.path().parent_path() / (dir.path().filename().string() + ".fail-pwrite");
  struct remove_flag {
    fs::path flag;
    ~remove_flag() { fs::remove(flag); }
  } cleanup{flag};
  faulty_holder holder(path, flag, 1500, 50);
  REQUIRE(holder.line().rfind("held ", 0) == 0);

  SECTION("a fault shorter than the margin: never lost, renewals resume") {
    write_file(flag, "");
    const auto stuck = lockfile::parse_lease(read_file(path));
    REQUIRE(stuck);
    // The fault lasts 400 ms: the length of the fault, not a synchronization.
    std::this_thread::sleep_for(400ms);
    CHECK(lockfile::parse_lease(read_file(path))->heartbeat == stuck->heartbeat);  // writes did fail
    fs::remove(flag);
    CHECK(eventually([&] { return lockfile::parse_lease(read_file(path))->heartbeat > stuck->heartbeat; }));
    CHECK(holder.finish() == "held=1");
  }
  SECTION("a lasting fault: lost once no renewal succeeded for stale - interval, not before") {
    const auto start = std::chrono::steady_clock::now();
    write_file(flag, "");
    CHECK(holder.line() == "lost");
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 1300ms);  // 1500 - 50, less the part of a tick that had passed
    CHECK(waited < 10s);
    fs::remove(flag);
    CHECK(holder.finish() == "held=0");
  }
}
