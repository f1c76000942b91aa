// The Windows suite: the library's guarantees on Windows, with real
// processes and real files, built with mingw-w64 and run under wine
// (`cmake --workflow --preset windows-wine`). Where wine is known to differ
// from Windows, the test says so.
#include "windows_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using lockfile_windows::eventually;
using lockfile_windows::scratch_dir;

namespace {

std::string contents(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The error a refused acquisition throws.
std::error_code refusal(lockfile::PIDLock& lock) {
  try {
    lock.acquire();
  } catch (const std::filesystem::filesystem_error& e) {
    return e.code();
  }
  return {};
}

}  // namespace

TEST_CASE("acquire publishes a complete lease record and release removes it") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path);
  REQUIRE(lock.try_lock());
  REQUIRE(lock.held());
  const auto lease = lockfile::parse_lease(contents(path));
  REQUIRE(lease);
  CHECK(lease->pid == static_cast<int>(::GetCurrentProcessId()));
  CHECK_FALSE(lease->boot_id.empty());
  CHECK(lease->start_time != 0);
  CHECK(lockfile::inspect(path).state == lockfile::LockState::held);
  lock.release();
  CHECK_FALSE(std::filesystem::exists(path));
  // Nothing of the protocol is left beside it.
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("a second lock object in the same process is refused while the first holds") {
  scratch_dir dir;
  lockfile::PIDLock first(dir / "app.lock");
  lockfile::PIDLock second(dir / "app.lock");
  REQUIRE(first.try_lock());
  CHECK_FALSE(second.try_lock());
  first.release();
  CHECK(second.try_lock());
}

TEST_CASE("a held lock file can be read by a program that does not share delete access") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path);
  REQUIRE(lock.try_lock());
  // std::ifstream (like fopen, type and most editors) shares read and write
  // only: the owner's handle must not hold DELETE access, or this fails.
  CHECK(lockfile::parse_lease(contents(path)));
}

TEST_CASE("the lease is renewed while held") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path, {.lease_heartbeat_interval = 20ms, .lease_stale_threshold = 200ms});
  REQUIRE(lock.try_lock());
  const auto first = lockfile::parse_lease(contents(path));
  REQUIRE(first);
  CHECK(eventually([&] {
    const auto now = lockfile::parse_lease(contents(path));
    return now && now->heartbeat > first->heartbeat;
  }));
  CHECK(lock.held());
}

TEST_CASE("a live holder in another process is never robbed") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  // A short lease: only the holder's renewal keeps it.
  auto holder = lockfile_windows::start_holder(path, 300);
  lockfile::PIDLock lock(path, {.lease_stale_threshold = 300ms});
  CHECK_FALSE(lock.try_lock_for(1500ms));
  const auto status = lockfile::inspect(path);
  CHECK(status.state == lockfile::LockState::held);
  REQUIRE(status.lease);
  CHECK(status.lease->pid == holder->pid());
  lockfile_windows::let_holder_release(path);
  CHECK(holder->wait() == 0);
  CHECK(lock.try_lock());
}

TEST_CASE("a killed holder is taken over at once, long before its lease would expire") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  holder->kill();  // TerminateProcess: no cleanup runs
  CHECK(lockfile::inspect(path, {.lease_stale_threshold = 60s}).state == lockfile::LockState::stale);
  lockfile::PIDLock lock(path, {.lease_stale_threshold = 60s});
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(lock.try_lock_for(20s));
  // The lease had 60 s to run: the dead-owner proof, not expiry, took it.
  CHECK(std::chrono::steady_clock::now() - start < 10s);
}

TEST_CASE("a release in another process wakes a waiter") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  lockfile::PIDLock lock(path, {.lease_stale_threshold = 60s});
  std::atomic<bool> acquired{false};
  std::thread waiter([&] {
    lock.lock();
    acquired = true;
  });
  CHECK_FALSE(eventually([&] { return acquired.load(); }, 300ms));  // still held
  lockfile_windows::let_holder_release(path);
  CHECK(eventually([&] { return acquired.load(); }, 10s));
  waiter.join();
  CHECK(holder->wait() == 0);
}

TEST_CASE("a waiter gives up at its deadline while the holder lives") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  lockfile::PIDLock lock(path);
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(lock.try_lock_for(400ms));
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 400ms);
  CHECK(waited < 10s);
}

TEST_CASE("a foreign file at the lock path is refused and left as it was") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  std::ofstream(path, std::ios::binary) << "my notes, not a lease\n";
  lockfile::PIDLock lock(path);
  CHECK(refusal(lock) == lockfile::errc::not_a_lock_file);
  CHECK(contents(path) == "my notes, not a lease\n");
  CHECK(lockfile::inspect(path).state == lockfile::LockState::foreign);
}

TEST_CASE("a directory at the lock path is refused") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  std::filesystem::create_directory(path);
  lockfile::PIDLock lock(path);
  std::string message;
  try {
    lock.acquire();
  } catch (const std::filesystem::filesystem_error& e) {
    message = e.what();
  }
  // The operation and the path, in the user's terms.
  CHECK_THAT(message, Catch::Contains("lock file") && Catch::Contains("app.lock"));
  CHECK(std::filesystem::is_directory(path));
}

TEST_CASE("a device name at the lock path is refused without opening it for reading") {
  scratch_dir dir;
  // NUL names the null device in every directory.
  lockfile::PIDLock lock(dir / "NUL");
  const auto ec = refusal(lock);
  CHECK(ec);
  CHECK_FALSE(lock.held());
}

TEST_CASE("a symbolic link at the lock path is refused and its target left alone") {
  scratch_dir dir;
  const auto target = dir / "target.txt";
  std::ofstream(target, std::ios::binary) << "precious\n";
  const auto path = dir / "app.lock";
  // Unprivileged creation needs developer mode on Windows 10. Wine 8
  // reports success and makes nothing (and refuses junctions with
  // ERROR_NOT_SUPPORTED), so under wine this test can only skip: the
  // refusal of reparse points is tested on Windows alone.
  constexpr DWORD allow_unprivileged = 0x2;  // SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE
  const bool made = ::CreateSymbolicLinkW(path.c_str(), target.c_str(), allow_unprivileged) &&
                    ::GetFileAttributesW(path.c_str()) != INVALID_FILE_ATTRIBUTES &&
                    (::GetFileAttributesW(path.c_str()) & FILE_ATTRIBUTE_REPARSE_POINT) != 0;
  if (!made) {
    WARN("no symbolic link could be made here (wine makes none): skipped");
    return;
  }
  lockfile::PIDLock lock(path);
  CHECK(refusal(lock) == std::errc::too_many_symbolic_link_levels);
  CHECK(contents(target) == "precious\n");
  CHECK(std::filesystem::is_symlink(path));
}

TEST_CASE("a reader that has the lock file open does not keep a release from freeing the name") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path);
  REQUIRE(lock.try_lock());
  // A reader as the library opens one: sharing read, write and delete.
  const HANDLE reader = ::CreateFileW(path.c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                                      nullptr, OPEN_EXISTING, 0, nullptr);
  REQUIRE(reader != INVALID_HANDLE_VALUE);
  lock.release();
  CHECK_FALSE(std::filesystem::exists(path));
  // The name is free at once, not "delete pending" until the reader closes.
  lockfile::PIDLock next(path);
  CHECK(next.try_lock());
  ::CloseHandle(reader);
}

TEST_CASE("missing parent directories are created") {
  scratch_dir dir;
  const auto path = dir.path() / "a" / "b" / "app.lock";
  lockfile::PIDLock lock(path);
  REQUIRE(lock.try_lock());
  CHECK(std::filesystem::exists(path));
}

TEST_CASE("a path with characters outside the ANSI code page works") {
  scratch_dir dir;
  const auto path = dir.path() / L"\u9396-\u0444\u0430\u0439\u043b.lock";
  lockfile::PIDLock lock(path);
  REQUIRE(lock.try_lock());
  CHECK(std::filesystem::exists(path));
  lock.release();
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("a stale lease of a dead process on another host is taken over by the lease rule") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::Lease lease;
  lease.owner_id = "1-1-1-abc";
  lease.pid = 1;
  lease.host = "elsewhere";
  lease.heartbeat = std::chrono::system_clock::now() - 10s;
  lease.stale_threshold = 1s;
  std::ofstream(path, std::ios::binary) << lockfile::format_lease(lease);
  lockfile::PIDLock lock(path, {.lease_stale_threshold = 1s});
  CHECK(lock.try_lock());
}

// The wake-ups themselves, below PIDLock (whose poll period, 50 to 75 ms,
// would hide a missing one): a waiter must wake on the holder's exit, and on
// the lock's name leaving the directory, long before its deadline, and must
// sleep through changes to other names. The event comes first: the watch is
// armed before it, and keeps it until the waiter reads it.
namespace {

std::chrono::steady_clock::duration time_to_wake(lockfile::detail::wait_channel& channel, HANDLE holder = nullptr,
                                                 std::chrono::steady_clock::duration deadline = 20s) {
  const auto start = std::chrono::steady_clock::now();
  channel.wait_until(start + deadline, holder);
  return std::chrono::steady_clock::now() - start;
}

}  // namespace

TEST_CASE("a waiter's channel wakes when the holder's process exits") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  const auto lease = lockfile::inspect(path).lease;
  REQUIRE(lease);
  auto exit_handle = lockfile::detail::open_holder_exit_fd(lease->pid, lease->start_time);
  REQUIRE(exit_handle);
  lockfile::detail::directory_watch watch;
  lockfile::detail::wait_channel channel(dir / "other.lock", watch);
  holder->kill();
  CHECK(time_to_wake(channel, exit_handle.get()) < 10s);
}

TEST_CASE("a waiter's channel wakes when the lock's name is renamed away in any letter case") {
  // A release renames the file aside before deleting it: the old name's
  // change is what frees the lock. Names compare as the file system does,
  // without regard to case.
  scratch_dir dir;
  lockfile_windows::touch(dir / "App.Lock");
  lockfile::detail::directory_watch watch;
  lockfile::detail::wait_channel channel(dir / "app.lock", watch);
  channel.watch();
  std::filesystem::rename(dir / "App.Lock", dir / "aside.tmp");
  CHECK(time_to_wake(channel) < 10s);
}

TEST_CASE("a waiter's channel wakes when the lock file is deleted") {
  scratch_dir dir;
  lockfile_windows::touch(dir / "app.lock");
  lockfile::detail::directory_watch watch;
  lockfile::detail::wait_channel channel(dir / "app.lock", watch);
  channel.watch();
  std::filesystem::remove(dir / "app.lock");
  CHECK(time_to_wake(channel) < 10s);
}

TEST_CASE("a waiter's channel wakes when a one-letter lock name is deleted") {
  // The last record of a change report is not padded: for a one-letter name
  // it is shorter than FILE_NOTIFY_INFORMATION, and was skipped.
  scratch_dir dir;
  lockfile_windows::touch(dir / "L");
  lockfile::detail::directory_watch watch;
  lockfile::detail::wait_channel channel(dir / "L", watch);
  channel.watch();
  std::filesystem::remove(dir / "L");
  CHECK(time_to_wake(channel) < 10s);
}

TEST_CASE("a waiter's channel sleeps its whole retry delay after a wake-up on the freed name") {
  // A wake-up on the freed name used to set the channel's wake event, which
  // stayed set: every later wait of the same attempt (its retry delays)
  // returned at once.
  scratch_dir dir;
  lockfile_windows::touch(dir / "app.lock");
  lockfile::detail::directory_watch watch;
  lockfile::detail::wait_channel channel(dir / "app.lock", watch);
  channel.watch();
  std::filesystem::remove(dir / "app.lock");
  REQUIRE(time_to_wake(channel) < 10s);
  CHECK(time_to_wake(channel, nullptr, 400ms) >= 380ms);
}

TEST_CASE("a waiter's channel sleeps through changes to other names in its directory") {
  // Other waiters' private files, other locks coming and going, and this
  // lock's name appearing (taken again): none frees this lock's name.
  scratch_dir dir;
  lockfile::detail::directory_watch watch;
  lockfile::detail::wait_channel channel(dir / "app.lock", watch);
  channel.watch();
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::thread churn([&] {
    lockfile_windows::touch(dir / ".app.lock.first.tmp");
    std::filesystem::rename(dir / ".app.lock.first.tmp", dir / "app.lock");
    for (int i = 0; !stop; ++i) {
      const auto name = dir.path() / (".app.lock.other-" + std::to_string(i) + ".tmp");
      lockfile_windows::touch(name);
      std::filesystem::rename(name, dir / "other.lock");
      std::filesystem::remove(dir / "other.lock");
      ++rounds;
      ::Sleep(5);
    }
  });
  const auto start = std::chrono::steady_clock::now();
  channel.wait_until(start + 1500ms, nullptr);
  const auto waited = std::chrono::steady_clock::now() - start;
  stop = true;
  churn.join();
  CHECK(rounds > 10);
  CHECK(waited >= 1400ms);
}

TEST_CASE("a holder's handle is refused for a pid whose creation time differs") {
  // The pid of this very process, with another start time: a reused pid.
  const auto& self = lockfile::detail::self_identity();
  CHECK(lockfile::detail::open_holder_exit_fd(self.pid, self.start_time));
  CHECK_FALSE(lockfile::detail::open_holder_exit_fd(self.pid, self.start_time + 1));
  CHECK(lockfile::detail::probe_process(self.pid, self.start_time) == lockfile::detail::liveness::alive);
  CHECK(lockfile::detail::probe_process(self.pid, self.start_time + 1) == lockfile::detail::liveness::dead);
}

namespace {
std::chrono::milliseconds cpu_time_of_this_process() {
  FILETIME created{}, exited{}, kernel{}, user{};
  ::GetProcessTimes(::GetCurrentProcess(), &created, &exited, &kernel, &user);
  const auto ticks = [](FILETIME t) { return (static_cast<std::uint64_t>(t.dwHighDateTime) << 32) | t.dwLowDateTime; };
  return std::chrono::milliseconds((ticks(kernel) + ticks(user)) / 10'000);
}
}  // namespace

TEST_CASE("a waiter sleeps while the holder lives instead of spinning on its own attempts' names") {
  // Each attempt creates and deletes a private file beside the lock file; a
  // directory watch that woke on any name would wake the waiter on its own
  // attempts, and it would spin.
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  lockfile::PIDLock lock(path);
  const auto cpu_before = cpu_time_of_this_process();
  CHECK_FALSE(lock.try_lock_for(1500ms));
  const auto cpu = cpu_time_of_this_process() - cpu_before;
  CHECK(cpu < 500ms);
}
