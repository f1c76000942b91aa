// One regression test per bug found in review or in use. Each names the bug
// it guards; each failed before its fix.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <array>
#include <atomic>
#include <charconv>
#include <memory>
#include <mutex>
#include <random>
#include <cstring>
#include <stdexcept>

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

// --- issue 13: foreign files, observations, times, bounds, file types --------

namespace {

// A same-machine record (our boot id and PID namespace) for pid, so that the
// dead-owner probe, or process_appears_alive, is asked about it.
std::string same_machine_record(int pid) {
  lockfile::Lease lease;
  lease.owner_id = "same-machine-owner";
  lease.pid = pid;
  lease.heartbeat = std::chrono::system_clock::now();
  lease.boot_id = our_boot_id();
  lease.pid_namespace = our_pid_namespace();
  return lockfile::format_lease(lease);
}

// Replaces path with a new file (another inode) holding bytes.
void replace_file(const fs::path& path, const std::string& bytes) {
  const auto temp = path.parent_path() / "replacement.tmp";
  write_file(temp, bytes);
  fs::rename(temp, path);
}

}  // namespace

TEST_CASE("regression: a file that is not a lease is never modified or removed, and acquiring it fails at once") {
  // Every file that was not a valid record used to be "invalid", and 1.2 s
  // after its last change it was replaced by a lease: PIDLock{"data.json"}
  // destroyed the user's data.
  temp_dir dir;
  const auto path = dir / "data.json";
  const std::string content = GENERATE(as<std::string>{}, "important notes\n", "#!/bin/sh\necho hi\n",
                                       "[1,2,3]", "{\"name\":\"x\",\"version\":1}", "{}",
                                       std::string("\x7f" "ELF\x02\x01\x00", 7), std::string("{\"pid\0\":1}", 9), "{\"verb\":");
  INFO("content of " << content.size() << " bytes");
  write_file(path, content);
  set_mtime(path, std::chrono::system_clock::now() - 1h);  // long past every threshold
  const auto before = dir.entries();
  PIDLock lock(path, {.acquire_retry_delay = 1ms});

  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == lockfile::errc::not_a_lock_file);
  try {
    lock.acquire();
    FAIL("acquire() did not throw");
  } catch (const fs::filesystem_error& e) {
    CHECK(e.code() == lockfile::errc::not_a_lock_file);
    CHECK(e.path1() == path);
    CHECK_THAT(e.what(), lockfile_test::contains_substring("exists and is not a lock file; refusing to touch it"));
  }
  CHECK_THROWS_AS(lock.try_lock(), fs::filesystem_error);
  CHECK_THROWS_AS(lock.try_lock_for(2s), fs::filesystem_error);  // at once, not after 2 s
  CHECK_THROWS_AS(lock.lock(), fs::filesystem_error);
  CHECK(lock.inspect().state == lockfile::LockState::foreign);
  CHECK(lockfile::inspect(path).state == lockfile::LockState::foreign);
  CHECK_FALSE(lock.held());
  CHECK(read_file(path) == content);
  CHECK(dir.entries() == before);
}

TEST_CASE("regression: the same bytes in another file, or written again, are not 'unchanged' to a waiting lock") {
  // Observations were keyed by bytes alone: "" seen, then "" seen again
  // (a new file, or the Go package's truncate-then-write) at least the
  // invalid threshold later, counted as one file unchanged all along, and a
  // fresh file was taken over.
  temp_dir dir;
  const auto path = dir / "app.lock";
  const lockfile::Options options{.invalid_lock_stale_threshold = 200ms};
  const bool same_inode = GENERATE(false, true);
  INFO((same_inode ? "rewritten in place" : "a new file"));
  write_file(path, "");
  PIDLock lock(path, options);
  CHECK_FALSE(lock.try_lock());  // fresh: held, and remembered
  const auto seen = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return std::chrono::steady_clock::now() - seen > 300ms; }));
  if (same_inode) {
    write_file(path, foreign_record(std::chrono::system_clock::now()));  // a renewal, then
    write_file(path, "");                                                // truncated again
  } else {
    replace_file(path, "");
  }
  CHECK_FALSE(lock.try_lock());  // fresh again by its mtime: still held
  CHECK(read_file(path).empty());
}

TEST_CASE("regression: a lock file whose mtime lies in the future is judged by its ctime") {
  // A heartbeat far ahead was judged by the mtime, and an mtime far ahead
  // (touch -d, a skewed server) blocked every single try until that date.
  // Past the year 2262 the nanosecond count overflowed.
  temp_dir dir;
  const auto path = dir / "app.lock";
  SECTION("an invalid file") {
    write_file(path, "");
    set_mtime(path, std::chrono::system_clock::now() + 24h * 365);
    const lockfile::Options options{.invalid_lock_stale_threshold = 100ms};
    CHECK(eventually([&] { return lockfile::inspect(path, options).state == lockfile::LockState::stale; }, 10s));
    PIDLock lock(path, options);
    CHECK(lock.try_lock());
  }
  SECTION("a record whose heartbeat and mtime are both past 2262") {
    write_file(path, "{\"version\":1,\"ownerID\":\"o\",\"pid\":999999,\"lastHeartbeatUnixNano\":9223372036854775807}\n");
    if (::utimensat(AT_FDCWD, path.c_str(),
                    std::array<timespec, 2>{timespec{10'413'792'000, 0}, timespec{10'413'792'000, 0}}.data(), 0) != 0)
      LOCKFILE_SKIP("this file system cannot store a time past 2262");
    const lockfile::Options options{.lease_heartbeat_interval = 20ms, .lease_stale_threshold = 100ms};
    CHECK(eventually([&] { return lockfile::inspect(path, options).state == lockfile::LockState::stale; }, 10s));
    PIDLock lock(path, options);
    CHECK(lock.try_lock());
  }
}

TEST_CASE("regression: a duration longer than 24 hours is refused, naming the field") {
  // milliseconds::max() passed validation and overflowed into a negative
  // staleThresholdNano.
  using std::chrono::milliseconds;
  const auto refused = [](const lockfile::Options& options, const std::string& field) {
    try {
      PIDLock lock("x.lock", options);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find(field) != std::string::npos &&
             std::string(e.what()).find("24 hours") != std::string::npos;
    }
    return false;
  };
  CHECK(refused({.lease_stale_threshold = milliseconds::max()}, "lease_stale_threshold"));
  CHECK(refused({.lease_stale_threshold = 24h + 1ms}, "lease_stale_threshold"));
  CHECK(refused({.acquire_retry_delay = 25h}, "acquire_retry_delay"));
  CHECK(refused({.invalid_lock_stale_threshold = milliseconds::max()}, "invalid_lock_stale_threshold"));
  CHECK_NOTHROW(PIDLock("x.lock", {.lease_heartbeat_interval = 1h, .lease_stale_threshold = 24h}));
}

TEST_CASE("regression: a socket at the path is refused as not a regular file, not with ENXIO") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.native().size() < sizeof address.sun_path);
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
  REQUIRE(::bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  PIDLock lock(path);
  try {
    lock.acquire();
    FAIL("acquire() did not throw");
  } catch (const fs::filesystem_error& e) {
    CHECK(e.code() == std::errc::invalid_argument);
    CHECK_THAT(e.what(), lockfile_test::contains_substring("not a regular file"));
  }
  CHECK_THROWS_AS(lockfile::inspect(path), fs::filesystem_error);
  CHECK(fs::is_socket(fs::symlink_status(path)));
  ::close(listener);
}

TEST_CASE("regression: an exception from process_appears_alive means alive (fail closed), and is reported") {
  // It escaped from acquire(), and acquire(ec) turned it into
  // state_not_recoverable.
  temp_dir dir;
  const auto path = dir / "app.lock";
  write_file(path, same_machine_record(static_cast<int>(::getpid())));
  int asked = 0;
  PIDLock lock(path, {.process_appears_alive = [&](int) -> bool {
                        ++asked;
                        throw std::runtime_error("probe broke");
                      }});
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == lockfile::errc::lock_held);
  try {
    lock.acquire();
    FAIL("acquire() did not throw");
  } catch (const lockfile::lock_held_error& e) {
    if (linux_extras)
      CHECK_THAT(e.what(), lockfile_test::contains_substring("process_appears_alive threw: probe broke"));
  }
  // The portable path never asks it (its records carry no same-machine
  // identity): held by the young lease, with nothing to report.
  if (linux_extras)
    CHECK(asked >= 2);
  else
    CHECK(asked == 0);
  CHECK(lockfile::parse_lease(read_file(path)));
}

TEST_CASE("regression: a child forked after its parent only inspected a lock writes its own pid, not the parent's") {
  // The parent's identity was computed by inspect() before any PIDLock
  // existed, so no fork handler was installed to make the child compute its
  // own: the child's lease named the parent, which is alive, and so a dead
  // child's lock could not be taken over at once (seen in torture).
  temp_dir dir;
  const auto held_elsewhere = dir.path() / "elsewhere.lock";
  write_file(held_elsewhere, foreign_record(std::chrono::system_clock::now()));
  const auto lock = dir.path() / "child.lock";
  const std::string command = std::string(LOCKFILE_TEST_HELPER) + " inspect-then-fork '" +
                              held_elsewhere.string() + "' '" + lock.string() + "'";
  std::FILE* helper = ::popen(command.c_str(), "r");
  REQUIRE(helper != nullptr);
  char line[128] = {};
  const bool read = std::fgets(line, sizeof line, helper) != nullptr;
  const int status = ::pclose(helper);
  REQUIRE(read);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  int child = 0, written = 0;
  REQUIRE(std::sscanf(line, "child %d %d", &child, &written) == 2);
  CHECK(written == child);
}

TEST_CASE("regression: a terminal at the path never becomes the controlling terminal (O_NOCTTY)") {
  // Without O_NOCTTY, a session leader without a terminal that opens a tty
  // at the lock path acquires it as its controlling terminal (and gets its
  // SIGHUP and SIGINT from then on).
  temp_dir dir;
  const auto path = dir / "app.lock";
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  struct stat terminal {};
  REQUIRE(::stat(::ptsname(master), &terminal) == 0);  // NOLINT(concurrency-mt-unsafe): one thread here
  if (::mknod(path.c_str(), S_IFCHR | 0666, terminal.st_rdev) != 0) {
    ::close(master);
    LOCKFILE_SKIP("cannot make a device node here (needs CAP_MKNOD)");
  }
  const int code = wait_exit(fork_child([&] {
    if (::setsid() < 0) return 90;  // a session leader without a terminal
    PIDLock lock(path);
    std::error_code ec;
    lock.acquire(ec);
    if (ec != std::errc::invalid_argument) return 1;  // "not a regular file"
    try {
      (void)lockfile::inspect(path);
      return 2;
    } catch (const fs::filesystem_error&) {
    }
    const int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (tty >= 0) {
      ::close(tty);
      return 3;  // the lock's open made it our controlling terminal
    }
    return 0;
  }));
  ::close(master);
  CHECK(code == 0);
  CHECK(fs::is_character_file(path));
}

TEST_CASE("regression: an mtime past the year 2262 saturates instead of overflowing into the past") {
  // seconds * 10^9 overflows 64 bits there (undefined behaviour; in practice
  // it wrapped to the 18th century, so a fresh invalid file looked ancient
  // and was reclaimed at once).
  temp_dir dir;
  const auto path = dir / "app.lock";
  write_file(path, "{\"version\":1");
  struct timespec times[2] = {{12'000'000'000LL, 0}, {12'000'000'000LL, 0}};  // the year 2350
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
  const auto status = lockfile::inspect(path);
  CHECK(status.state == lockfile::LockState::held);  // judged by its fresh ctime
  CHECK(status.age < 1h);
  PIDLock lock(path);
  std::error_code ec;
  lock.acquire(ec);
  CHECK(ec == lockfile::errc::lock_held);
  CHECK(read_file(path) == "{\"version\":1");
}

TEST_CASE("regression: a lock file path ending in '/' is refused naming the path and what is wrong, not the constructor's internals") {
  // PIDLock{"dir/"} said "lockfile::PIDLock: lock_file: 'dir/' does not name
  // a file": a class and a parameter name, which lockrun passed on to its
  // users, and no word on why a path to a directory names no file.
  struct bad_path {
    const char* path;
    const char* quoted;  // the path as the message must show it
    const char* reason;
  };
  const bad_path cases[] = {
      {"dir/", "'dir/'", "ends in '/'"},
      {"/var/lock/", "'/var/lock/'", "ends in '/'"},
      {"/", "'/'", "ends in '/'"},
      {"dir/.", "'dir/.'", "ends in '.'"},
      {".", "'.'", "ends in '.'"},
      {"dir/..", "'dir/..'", "ends in '..'"},
  };
  for (const auto& c : cases) {
    INFO("path " << c.path);
    std::string message;
    try {
      PIDLock lock{c.path};
      FAIL("the constructor accepted '" << c.path << "'");
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    INFO(message);
    CHECK_THAT(message, lockfile_test::contains_substring(std::string("lock file path ") + c.quoted));
    CHECK_THAT(message, lockfile_test::contains_substring("does not name a file"));  // lockrun's tests look for it
    CHECK_THAT(message, lockfile_test::contains_substring(c.reason));
    CHECK_THAT(message, lockfile_test::contains_substring("directory"));
    CHECK_THAT(message, !lockfile_test::contains_substring("PIDLock"));
    CHECK_THAT(message, !lockfile_test::contains_substring("lock_file"));
  }
  std::string message;
  try {
    PIDLock lock{""};
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  CHECK_THAT(message, lockfile_test::contains_substring("lock file path is empty"));
  CHECK_THAT(message, !lockfile_test::contains_substring("lock_file"));
}

TEST_CASE("regression: inspect() refuses a path that names no file like the PIDLock constructor") {
  // inspect("dir/") judged "dir/" as a missing file and answered free, so
  // `lockrun --status dir/` said a lock was free that nobody could take.
  temp_dir dir;
  const auto slash = (dir / "locks").string() + "/";
  fs::create_directory(dir / "locks");
  CHECK_THROWS_AS(lockfile::inspect(slash), std::invalid_argument);
  CHECK_THROWS_AS(lockfile::inspect(dir / "locks" / ".."), std::invalid_argument);
  CHECK_THROWS_AS(lockfile::inspect(""), std::invalid_argument);
}
