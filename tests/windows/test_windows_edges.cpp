// The Windows suite, continued: hostile neighbours peculiar to Windows
// (programs that open a lock file without sharing, read-only and
// delete-pending files, names Windows cannot spell, long paths), the
// choice between the local and the network path, and many processes at
// once on both paths. Where wine differs from Windows, the test says so.
#include "windows_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using lockfile_windows::eventually;
using lockfile_windows::scratch_dir;

namespace {

// A program's own handle on a file, with the share mode it chose.
lockfile::detail::unique_fd open_as_program(const std::filesystem::path& path, DWORD access, DWORD share) {
  return lockfile::detail::unique_fd(
      ::CreateFileW(path.c_str(), access, share, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr));
}

std::vector<std::filesystem::path> protocol_leftovers(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().wstring().starts_with(L".app.lock.")) out.push_back(entry.path());
  return out;
}

// Drive N: of the suite's prefix is a network drive (tests/windows/wine.sh).
bool network_drive_ready() { return ::GetDriveTypeW(L"N:\\") == DRIVE_REMOTE; }

// Ends the test, with a warning, where there is no network drive.
#define REQUIRE_NETWORK_DRIVE_OR_RETURN()                                      \
  do {                                                                         \
    if (!network_drive_ready()) {                                              \
      WARN("drive N: is not a network drive here: the network path is skipped"); \
      return;                                                                  \
    }                                                                          \
  } while (false)

// Closes a program's handle after a while, and says when it did: a removal
// that waits for it ends after that moment.
class closes_later {
 public:
  explicit closes_later(lockfile::detail::unique_fd& handle)
      : thread_([this, &handle] {
          ::Sleep(100);
          closed_at_ = std::chrono::steady_clock::now();
          handle.reset();
        }) {}
  ~closes_later() {
    if (thread_.joinable()) thread_.join();
  }
  closes_later(const closes_later&) = delete;
  closes_later& operator=(const closes_later&) = delete;
  std::chrono::steady_clock::time_point closed_at() {
    thread_.join();
    return closed_at_;
  }

 private:
  std::chrono::steady_clock::time_point closed_at_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("a name Windows cannot spell is an invalid-argument error and not a free lock") {
  // libstdc++ maps ERROR_INVALID_NAME to "no such file": inspect() called
  // such a lock free, as if its file had vanished.
  scratch_dir dir;
  const auto path = dir / "a<b.lock";
  try {
    (void)lockfile::inspect(path);
    FAIL("inspect() judged a name that cannot exist");
  } catch (const std::filesystem::filesystem_error& e) {
    CHECK(e.code() == std::errc::invalid_argument);
  }
  lockfile::PIDLock lock(path);
  try {
    lock.acquire();
    FAIL("acquired a name that cannot exist");
  } catch (const std::filesystem::filesystem_error& e) {
    CHECK(e.code() == std::errc::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("a<b.lock"));
  }
}

TEST_CASE("a release waits for a program that has the lock file open without sharing delete access") {
  // Such a program (most that open with share read|write) keeps the name
  // from being removed until it closes the file: that is a busy removal,
  // retried, not a failed one.
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path);
  lock.acquire();
  auto reader = open_as_program(path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE);
  REQUIRE(reader);
  closes_later closer(reader);
  CHECK_NOTHROW(lock.release());
  const auto released_at = std::chrono::steady_clock::now();
  CHECK(released_at >= closer.closed_at());  // it waited for the program
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(protocol_leftovers(dir.path()).empty());
}

TEST_CASE("a release that a program keeps refusing says why and leaves the lease to go stale") {
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path, {.acquire_retry_limit = 3, .acquire_retry_delay = 10ms});
  lock.acquire();
  const auto reader = open_as_program(path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE);
  REQUIRE(reader);
  try {
    lock.release();
    FAIL("released although the name could not be removed");
  } catch (const std::filesystem::filesystem_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("without sharing delete access"));
    CHECK_THAT(e.what(), Catch::Contains("app.lock"));
  }
  CHECK_FALSE(lock.held());
  CHECK(std::filesystem::exists(path));
}

TEST_CASE("a stale lock file that a program opened without sharing write access is judged and then taken over") {
  // Reopening it read-write for the guard is refused (a sharing violation,
  // not "access denied"): it is judged through a read-only handle, and its
  // removal waits for the program to close it.
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  holder->kill();
  auto reader = open_as_program(path, GENERIC_READ, FILE_SHARE_READ);
  REQUIRE(reader);
  CHECK(lockfile::inspect(path, {.lease_stale_threshold = 60s}).state == lockfile::LockState::stale);
  lockfile::PIDLock lock(path, {.lease_stale_threshold = 60s});
  closes_later closer(reader);
  CHECK(lock.try_lock_for(20s));
  const auto taken_at = std::chrono::steady_clock::now();
  CHECK(taken_at >= closer.closed_at());  // it waited for the program
}

TEST_CASE("releasing a read-only lock file removes it or leaves it whole at its name") {
  // Renamed aside and then refused the delete (read-only), the file stayed
  // under a private name: neither released nor held. Now it is deleted at
  // once (POSIX semantics, read-only ignored) or put back at its name.
  scratch_dir dir;
  const auto path = dir / "app.lock";
  lockfile::PIDLock lock(path);
  lock.acquire();
  REQUIRE(::SetFileAttributesW(path.c_str(), FILE_ATTRIBUTE_READONLY));
  std::error_code ec;
  lock.release(ec);
  INFO("release: " << ec.message());
  // Windows 10 1809 and later ignore the attribute for a POSIX-semantics
  // delete: there the release must succeed. Wine has no such delete.
  if (!lockfile_windows::running_under_wine()) CHECK_FALSE(ec);
  if (ec) {
    CHECK(std::filesystem::exists(path));
    ::SetFileAttributesW(path.c_str(), FILE_ATTRIBUTE_NORMAL);
  } else {
    CHECK_FALSE(std::filesystem::exists(path));
  }
  CHECK(protocol_leftovers(dir.path()).empty());
}

TEST_CASE("a lock file deleted while a program has it open is judged gone and not access denied") {
  // Until the last handle closes, the name of a deleted file stays taken
  // ("delete pending") and opening it is "access denied".
  scratch_dir dir;
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  // Deleted the classic way, through a handle that stays open (DeleteFileW
  // may delete with POSIX semantics, which frees the name at once).
  auto reader = open_as_program(path, GENERIC_READ | DELETE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
  REQUIRE(reader);
  FILE_DISPOSITION_INFO disposition{};
  disposition.DeleteFile = TRUE;
  REQUIRE(::SetFileInformationByHandle(reader.get(), FileDispositionInfo, &disposition, sizeof disposition));
  const lockfile::detail::unique_fd probe(::CreateFileW(path.c_str(), FILE_READ_ATTRIBUTES, FILE_SHARE_READ |
                                                        FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr, OPEN_EXISTING,
                                                        FILE_FLAG_BACKUP_SEMANTICS, nullptr));
  if (!probe && ::GetLastError() == ERROR_ACCESS_DENIED)
    CHECK(lockfile::inspect(path).state == lockfile::LockState::free);
  else  // wine: the name stays openable until the last handle closes
    WARN("a delete-pending file can be opened here (wine): only the recovery is checked");
  reader.reset();
  holder->kill();
  lockfile::PIDLock lock(path);
  CHECK(lock.try_lock_for(10s));
}

TEST_CASE("long paths are given the extended-length prefix and work") {
  using lockfile::detail::win32_path;
  CHECK(win32_path(L"C:\\short\\app.lock") == L"C:\\short\\app.lock");
  const std::wstring deep = L"C:\\" + std::wstring(300, L'd') + L"\\.\\x\\..\\app.lock";
  CHECK(win32_path(deep) == L"\\\\?\\C:\\" + std::wstring(300, L'd') + L"\\app.lock");
  const std::wstring share = L"\\\\server\\share\\" + std::wstring(300, L's') + L"\\app.lock";
  CHECK(win32_path(share) == L"\\\\?\\UNC\\server\\share\\" + std::wstring(300, L's') + L"\\app.lock");
  CHECK(win32_path(L"\\\\?\\C:\\" + std::wstring(300, L'x')) == L"\\\\?\\C:\\" + std::wstring(300, L'x'));
  // NT names and devices pass as given; a device name at the end of a
  // long path stays the device (the prefix would make it a file "NUL").
  CHECK(win32_path(L"\\??\\C:\\" + std::wstring(300, L'n')) == L"\\??\\C:\\" + std::wstring(300, L'n'));
  CHECK(win32_path(L"\\\\.\\" + std::wstring(300, L'p')) == L"\\\\.\\" + std::wstring(300, L'p'));
  const auto device = win32_path(L"C:\\" + std::wstring(300, L'd') + L"\\NUL");
  CHECK_FALSE(device.starts_with(L"\\\\?\\"));

  scratch_dir dir;
  auto path = dir.path();
  for (int level = 0; level < 6; ++level) path /= std::string(60, static_cast<char>('a' + level));
  path /= "app.lock";
  REQUIRE(path.native().size() > 360);
  lockfile::PIDLock lock(path);
  lock.acquire();
  CHECK(lockfile::inspect(path).state == lockfile::LockState::held);
  lock.release();
  CHECK(lockfile::inspect(path).state == lockfile::LockState::free);
}

TEST_CASE("only NTFS and ReFS volumes that are not remote take the local path") {
  scratch_dir dir;
  const auto local = lockfile::detail::decide_fs_path(dir.path());
  CHECK(local.path == lockfile::detail::fs_path::local);  // wine reports its drives as NTFS
  CHECK(local.final);
  const auto missing = lockfile::detail::decide_fs_path(dir.path() / "not" / "yet");
  CHECK(missing.path == lockfile::detail::fs_path::local);
  CHECK_FALSE(missing.final);
  REQUIRE_NETWORK_DRIVE_OR_RETURN();
  CHECK(lockfile::detail::decide_fs_path(L"N:\\").path == lockfile::detail::fs_path::network);
}

namespace {

void contend_in(const std::filesystem::path& dir, int processes, int rounds) {
  const auto path = dir / "app.lock";
  const auto inside = dir / "inside";
  std::vector<std::unique_ptr<lockfile_windows::helper_process>> contenders;
  for (int i = 0; i < processes; ++i)
    contenders.push_back(std::make_unique<lockfile_windows::helper_process>(
        L"contend " + lockfile_windows::quoted(path) + L" " + lockfile_windows::quoted(inside) + L" " +
        std::to_wstring(rounds)));
  for (auto& contender : contenders) CHECK(contender->wait(60s) == 0);  // 2: two holders at once
  CHECK_FALSE(std::filesystem::exists(path));
}

void reclaim_race_in(const std::filesystem::path& dir) {
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 60000);
  holder->kill();
  std::vector<std::unique_ptr<lockfile_windows::helper_process>> reclaimers;
  for (int i = 0; i < 3; ++i) {
    const auto won = dir / ("won-" + std::to_string(i));
    reclaimers.push_back(std::make_unique<lockfile_windows::helper_process>(
        L"try-once " + lockfile_windows::quoted(path) + L" " + lockfile_windows::quoted(won)));
  }
  // The losers exit at once; the winner holds until told.
  REQUIRE(eventually([&] {
    int exited = 0;
    for (auto& r : reclaimers) exited += r->wait(0ms) == 1 ? 1 : 0;
    return exited == 2;
  }));
  int winners = 0;
  for (int i = 0; i < 3; ++i) winners += std::filesystem::exists(dir / ("won-" + std::to_string(i))) ? 1 : 0;
  CHECK(winners == 1);
  lockfile_windows::let_holder_release(path);
  for (auto& r : reclaimers) CHECK(r->wait(30s) >= 0);
}

}  // namespace

TEST_CASE("four processes contend for one lock and never hold it at once") {
  scratch_dir dir;
  contend_in(dir.path(), 4, 15);
}

TEST_CASE("three processes reclaim a killed holder's lock and exactly one wins") {
  scratch_dir dir;
  reclaim_race_in(dir.path());
}

TEST_CASE("on a network drive a directory past MAX_PATH still takes the network path") {
  REQUIRE_NETWORK_DRIVE_OR_RETURN();
  scratch_dir dir(L"N:\\");
  auto deep = dir.path();
  for (int level = 0; level < 5; ++level) deep /= std::wstring(60, static_cast<wchar_t>(L'a' + level));
  REQUIRE(std::filesystem::create_directories(lockfile::detail::win32_path(deep)));
  REQUIRE(deep.native().size() > MAX_PATH);
  CHECK(lockfile::detail::decide_fs_path(deep).path == lockfile::detail::fs_path::network);
}

TEST_CASE("on a network drive four processes contend and never hold the lock at once") {
  REQUIRE_NETWORK_DRIVE_OR_RETURN();
  scratch_dir dir(L"N:\\");
  REQUIRE(lockfile::detail::decide_fs_path(dir.path()).path == lockfile::detail::fs_path::network);
  contend_in(dir.path(), 4, 10);
}

TEST_CASE("on a network drive three processes reclaim a killed holder's lock and exactly one wins") {
  REQUIRE_NETWORK_DRIVE_OR_RETURN();
  scratch_dir dir(L"N:\\");
  reclaim_race_in(dir.path());
}

TEST_CASE("on a network drive a live holder is never robbed") {
  REQUIRE_NETWORK_DRIVE_OR_RETURN();
  scratch_dir dir(L"N:\\");
  const auto path = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(path, 600);
  lockfile::PIDLock lock(path, {.lease_stale_threshold = 600ms});
  // Three lease thresholds: renewals keep the lease fresh throughout.
  CHECK_FALSE(lock.try_lock_for(1800ms));
  lockfile_windows::let_holder_release(path);
  CHECK(holder->wait() == 0);
  CHECK(lock.try_lock_for(10s));
}

namespace {

// Fencing tokens in dir: they rise across releases and a killed holder's
// takeover, the record carries them, and one generation name stays.
void fencing_rises_in(const std::filesystem::path& dir) {
  const auto path = dir / "app.lock";
  lockfile::Options options;
  options.fencing = true;
  for (std::uint64_t expected = 1; expected <= 3; ++expected) {
    CAPTURE(expected);
    lockfile::PIDLock lock(path, options);
    REQUIRE(lock.try_lock());
    CHECK(lock.fencing_token() == expected);
    std::string record;
    {
      // Closed before the release: ifstream does not share delete access,
      // so an open one would keep the name from being removed (and the
      // next acquisition would find the lock held).
      std::ifstream file(path, std::ios::binary);
      record.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    }
    const auto lease = lockfile::parse_lease(record);
    REQUIRE(lease);
    CHECK(lease->fencing_token == expected);
    lock.unlock();
  }
  {
    auto holder = lockfile_windows::start_holder(path, 60000, true);
    auto ready = path;
    ready += ".ready";
    std::uint64_t held_with = 0;
    std::ifstream(ready) >> held_with;
    CHECK(held_with == 4);
    holder->kill();  // TerminateProcess: its lease had a minute left
    std::filesystem::remove(ready);
  }
  lockfile::PIDLock lock(path, options);
  REQUIRE(lock.try_lock());
  CHECK(lock.fencing_token() == 5);
  std::vector<std::wstring> beside;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path() != path) beside.push_back(entry.path().filename().wstring());
  CHECK(beside == std::vector<std::wstring>{L".app.lock.fence.5"});
}

}  // namespace

TEST_CASE("fencing: tokens rise across releases and a killed holder's takeover") {
  scratch_dir dir;
  fencing_rises_in(dir.path());
}

TEST_CASE("on a network drive fencing tokens rise across releases and a killed holder's takeover") {
  REQUIRE_NETWORK_DRIVE_OR_RETURN();
  scratch_dir dir(L"N:\\");
  REQUIRE(lockfile::detail::decide_fs_path(dir.path()).path == lockfile::detail::fs_path::network);
  fencing_rises_in(dir.path());
}

TEST_CASE("the directory watch of a waiting lock is closed when its last waiting call returns") {
  // It stayed open for the life of the PIDLock: a lock that waited once
  // kept its directory open and its changes queued.
  scratch_dir dir;
  lockfile::detail::wait_channel channel(dir / "app.lock", lockfile::detail::renewal_service::instance().watch());
  {
    const lockfile::detail::waiting_call first(channel);
    channel.watch();
    CHECK(channel.watching());
    {
      const lockfile::detail::waiting_call second(channel);
      channel.watch();
    }
    CHECK(channel.watching());  // the first still waits
  }
  CHECK_FALSE(channel.watching());
  const lockfile::detail::waiting_call again(channel);
  channel.watch();
  CHECK(channel.watching());  // watched again by the next waiting call
}
