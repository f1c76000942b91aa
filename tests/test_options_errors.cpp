// Unit tests of Options (defaults, validation by the PIDLock constructor), the
// error category, lock_held_error, and inspect() on hand-made lock files
// (DESIGN.md "Public API", "Errors and bad input", "Clarifications").
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using lockfile::Lease;
using lockfile::LockState;
using lockfile::Options;
using lockfile::PIDLock;

// A fresh directory under the system's temporary directory, removed with
// everything in it at the end of the test.
struct scratch_dir {
  fs::path path;
  scratch_dir() {
    std::string pattern = (fs::temp_directory_path() / "lockfile-unit-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~scratch_dir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;

  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path))
      names.push_back(entry.path().filename().string());
    return names;
  }
};

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Sets the file's modification time to now + offset (offset may be negative).
void set_mtime(const fs::path& path, std::chrono::nanoseconds offset) {
  lockfile_test::set_mtime(path, std::chrono::system_clock::now() + offset);
}

struct file_snapshot {
  std::string bytes;
  long long mtime_sec = 0;
  long mtime_nsec = 0;
  long long ctime_sec = 0;  // any metadata change (chmod, utimensat, link) moves it
  long ctime_nsec = 0;
  ino_t inode = 0;
  mode_t mode = 0;
  bool operator==(const file_snapshot&) const = default;
};

file_snapshot snapshot(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) throw std::runtime_error("lstat failed on " + path.string());
  return {read_file(path),
          static_cast<long long>(st.st_mtim.tv_sec),
          st.st_mtim.tv_nsec,
          static_cast<long long>(st.st_ctim.tv_sec),
          st.st_ctim.tv_nsec,
          st.st_ino,
          st.st_mode};
}

// inspect() that also checks it changed nothing: the file's bytes, mtime,
// inode and mode, and the directory's entries.
lockfile::LockStatus inspect_unchanged(const scratch_dir& dir, const fs::path& path,
                                       const Options& options = {}) {
  const auto before = snapshot(path);
  const auto entries_before = dir.entries();
  const auto status = lockfile::inspect(path, options);
  CHECK(snapshot(path) == before);
  CHECK(dir.entries() == entries_before);
  return status;
}

// A record of a live process (this one) that carries no boot id and no PID
// namespace, so only the lease rule can judge it.
Lease live_lease(std::chrono::system_clock::time_point heartbeat) {
  Lease lease;
  lease.owner_id = "unit-test-owner";
  lease.pid = static_cast<int>(::getpid());
  lease.heartbeat = heartbeat;
  lease.host = "unit-test-host";
  return lease;
}

std::optional<Lease> round_tripped(const Lease& lease) {
  return lockfile::parse_lease(lockfile::format_lease(lease));
}

// The message of the std::invalid_argument the constructor throws, or "" when
// it does not throw.
std::string constructor_error(const fs::path& path, const Options& options) {
  try {
    PIDLock lock{path, options};
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

TEST_CASE("Options: the defaults are exactly those of DESIGN.md (the Go package's)") {
  const Options options;
  CHECK(options.held_error == lockfile::make_error_code(lockfile::errc::lock_held));
  CHECK(options.held_error == lockfile::errc::lock_held);
  CHECK(options.acquire_retry_limit == 12);
  CHECK(options.acquire_retry_delay == 20ms);
  CHECK(options.invalid_lock_stale_threshold == 1200ms);
  CHECK(options.file_mode == static_cast<fs::perms>(0644));
  CHECK(options.directory_mode == static_cast<fs::perms>(0755));
  CHECK_FALSE(static_cast<bool>(options.process_appears_alive));
  CHECK(options.lease_heartbeat_interval == 250ms);
  CHECK(options.lease_stale_threshold == 3000ms);
  CHECK_FALSE(static_cast<bool>(options.on_lease_lost));

  static_assert(std::is_same_v<decltype(Options::held_error), std::error_code>);
  static_assert(std::is_same_v<decltype(Options::acquire_retry_limit), int>);
  static_assert(std::is_same_v<decltype(Options::acquire_retry_delay), std::chrono::milliseconds>);
  static_assert(std::is_same_v<decltype(Options::invalid_lock_stale_threshold),
                               std::chrono::milliseconds>);
  static_assert(std::is_same_v<decltype(Options::file_mode), lockfile::FileMode>);
  static_assert(std::is_same_v<decltype(Options::directory_mode), lockfile::FileMode>);
  static_assert(std::is_same_v<decltype(Options::process_appears_alive), std::function<bool(int)>>);
  static_assert(std::is_same_v<decltype(Options::lease_heartbeat_interval),
                               std::chrono::milliseconds>);
  static_assert(std::is_same_v<decltype(Options::lease_stale_threshold), std::chrono::milliseconds>);
  static_assert(std::is_same_v<decltype(Options::on_lease_lost), std::function<void()>>);
}

TEST_CASE("Options: designated initializers set options at construction (PIDLock lk{path, {.x = v}})") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  lockfile::PIDLock lk{path, {.lease_stale_threshold = 5s}};
  CHECK(lk.path() == path);
  CHECK_FALSE(lk.held());

  lockfile::PIDLock several{path,
                            {.acquire_retry_limit = 3,
                             .acquire_retry_delay = 0ms,
                             .process_appears_alive = [](int) { return true; },
                             .lease_heartbeat_interval = 100ms,
                             .lease_stale_threshold = 1s,
                             .on_lease_lost = [] {}}};
  CHECK(several.path() == path);

  const Options options{.acquire_retry_limit = 5, .lease_stale_threshold = 4s};
  CHECK(options.acquire_retry_limit == 5);
  CHECK(options.lease_stale_threshold == 4000ms);
  CHECK(options.acquire_retry_delay == 20ms);  // the rest keep their defaults
  CHECK(options.lease_heartbeat_interval == 250ms);
}

TEST_CASE("Options: file_mode and directory_mode take a plain octal integer (.file_mode = 0600) or std::filesystem::perms") {
  using lockfile::FileMode;
  // Both spellings convert implicitly, FileMode converts back to perms (code
  // written when the fields were perms keeps compiling), bool does not.
  static_assert(std::is_convertible_v<int, FileMode>);
  static_assert(std::is_convertible_v<unsigned, FileMode>);  // mode_t, S_IRUSR | S_IWUSR
  static_assert(std::is_convertible_v<fs::perms, FileMode>);
  static_assert(std::is_convertible_v<FileMode, fs::perms>);
  static_assert(!std::is_convertible_v<bool, FileMode>);
  static_assert(FileMode(0600) == (fs::perms::owner_read | fs::perms::owner_write));
  static_assert((fs::perms::owner_read | fs::perms::owner_write) == FileMode(0600));
  static_assert(FileMode(0600) == 0600 && 0600 == FileMode(0600) && FileMode(0600) != 0640);
  static_assert(FileMode(fs::perms::owner_all) == FileMode(0700));

  const Options octal{.file_mode = 0600, .directory_mode = 0700};
  CHECK(octal.file_mode == 0600);
  CHECK(octal.file_mode == (fs::perms::owner_read | fs::perms::owner_write));
  CHECK(octal.directory_mode == fs::perms::owner_all);
  const Options perms{.file_mode = fs::perms::owner_read | fs::perms::owner_write,
                      .directory_mode = static_cast<fs::perms>(0700)};
  CHECK(perms.file_mode == octal.file_mode);
  CHECK(perms.directory_mode == 0700);
  const fs::perms back = octal.file_mode;  // and as perms again
  CHECK(back == static_cast<fs::perms>(0600));
  CHECK((octal.file_mode & fs::perms::group_all) == fs::perms::none);
  Options assigned;
  assigned.file_mode = 0640u;
  assigned.directory_mode = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec;
  CHECK(assigned.file_mode.value() == 0640);
  CHECK(assigned.directory_mode.value() == 0750);

  // And both reach the file system: created with these modes (umask 0 here).
  scratch_dir dir;
  struct umask_zero {
    mode_t old = ::umask(0);
    ~umask_zero() { ::umask(old); }
  } umask_guard;
  for (const Options& options : {octal, perms}) {
    const fs::path path = dir.path / "new" / "x.lock";
    {
      PIDLock lock{path, options};
      lock.acquire();
      CHECK(fs::status(path).permissions() == static_cast<fs::perms>(0600));
      CHECK(fs::status(path.parent_path()).permissions() == static_cast<fs::perms>(0700));
    }
    fs::remove_all(path.parent_path());
  }
}

TEST_CASE("PIDLock is neither copyable nor movable, like std::mutex") {
  static_assert(!std::is_copy_constructible_v<PIDLock>);
  static_assert(!std::is_copy_assignable_v<PIDLock>);
  static_assert(!std::is_move_constructible_v<PIDLock>);
  static_assert(!std::is_move_assignable_v<PIDLock>);
  static_assert(std::is_nothrow_destructible_v<PIDLock>);
  static_assert(!std::is_convertible_v<fs::path, PIDLock>, "the constructor is explicit");
  SUCCEED();
}

// ---------------------------------------------------------------------------
// PIDLock constructor: validation
// ---------------------------------------------------------------------------

TEST_CASE("PIDLock constructor: a path that names no file is std::invalid_argument naming the path") {
  for (const char* bad : {"dir/", "/", ".", "..", "dir/.", "dir/..", "/tmp/", "a/b/"}) {
    INFO("path '" << bad << "'");
    REQUIRE_THROWS_AS(PIDLock(fs::path(bad)), std::invalid_argument);
    const auto message = constructor_error(bad, {});
    CHECK(contains(message, std::string("lock file path '") + bad + "' does not name a file"));
  }
  REQUIRE_THROWS_AS(PIDLock(fs::path()), std::invalid_argument);
  CHECK(contains(constructor_error("", {}), "lock file path is empty"));
}

TEST_CASE("PIDLock constructor: acquire_retry_limit below 1 is std::invalid_argument naming it") {
  for (int limit : {0, -1, INT_MIN}) {
    INFO("acquire_retry_limit " << limit);
    Options options;
    options.acquire_retry_limit = limit;
    REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
    const auto message = constructor_error("x.lock", options);
    CHECK(contains(message, "acquire_retry_limit"));
    CHECK(contains(message, std::to_string(limit)));
  }
}

TEST_CASE("PIDLock constructor: each negative duration is std::invalid_argument naming its field") {
  struct field {
    const char* name;
    std::chrono::milliseconds Options::*member;
  };
  const field fields[] = {
      {"acquire_retry_delay", &Options::acquire_retry_delay},
      {"invalid_lock_stale_threshold", &Options::invalid_lock_stale_threshold},
      {"lease_heartbeat_interval", &Options::lease_heartbeat_interval},
      {"lease_stale_threshold", &Options::lease_stale_threshold},
  };
  for (const auto& f : fields) {
    for (auto value : {-1ms, -1000ms, std::chrono::milliseconds::min()}) {
      INFO(f.name << " = " << value.count() << " ms");
      Options options;
      options.*(f.member) = value;
      REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
      const auto message = constructor_error("x.lock", options);
      CHECK(contains(message, f.name));
      CHECK(contains(message, "negative"));
    }
  }
}

TEST_CASE("PIDLock constructor: a zero heartbeat interval or zero stale threshold is std::invalid_argument") {
  {
    Options options;
    options.lease_heartbeat_interval = 0ms;
    REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
    CHECK(contains(constructor_error("x.lock", options), "lease_heartbeat_interval"));
  }
  {
    Options options;
    options.lease_stale_threshold = 0ms;
    REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
    CHECK(contains(constructor_error("x.lock", options), "lease_stale_threshold"));
  }
}

TEST_CASE("PIDLock constructor: a heartbeat not shorter than the stale threshold (lease expiring between heartbeats) is std::invalid_argument") {
  const std::pair<std::chrono::milliseconds, std::chrono::milliseconds> cases[] = {
      {1000ms, 1000ms}, {3000ms, 3000ms}, {1001ms, 1000ms}, {5000ms, 3000ms}, {1ms, 1ms}};
  for (const auto& [heartbeat, stale] : cases) {
    INFO("heartbeat " << heartbeat.count() << " ms, stale " << stale.count() << " ms");
    Options options;
    options.lease_heartbeat_interval = heartbeat;
    options.lease_stale_threshold = stale;
    REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
    const auto message = constructor_error("x.lock", options);
    CHECK(contains(message, "lease_heartbeat_interval"));
    CHECK(contains(message, "lease_stale_threshold"));
  }
}

TEST_CASE("PIDLock constructor: file_mode or directory_mode with bits outside 07777 is std::invalid_argument") {
  for (unsigned bits : {010000u, 0100644u, 040755u, 0xFFFFFFFFu}) {
    INFO("mode bits " << bits);
    {
      Options options;
      options.file_mode = static_cast<fs::perms>(bits);
      REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
      CHECK(contains(constructor_error("x.lock", options), "file_mode"));
    }
    {
      Options options;
      options.directory_mode = static_cast<fs::perms>(bits);
      REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
      CHECK(contains(constructor_error("x.lock", options), "directory_mode"));
    }
  }
}

TEST_CASE("PIDLock constructor: an integer mode outside 07777 (0100644, 010000, -1) is std::invalid_argument naming the field and the value") {
  const std::pair<long long, const char*> cases[] = {
      {0100644, "0100644"}, {010000, "010000"}, {040755, "040755"}, {-1, "-1"}, {-0600, "-384"}};
  for (const auto& [mode, shown] : cases) {
    INFO("mode " << shown);
    {
      const Options options{.file_mode = mode};
      REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
      const auto message = constructor_error("x.lock", options);
      CHECK(contains(message, "file_mode"));
      CHECK(contains(message, "07777"));
      CHECK(contains(message, std::string("got ") + shown));
    }
    {
      const Options options{.directory_mode = mode};
      REQUIRE_THROWS_AS(PIDLock("x.lock", options), std::invalid_argument);
      const auto message = constructor_error("x.lock", options);
      CHECK(contains(message, "directory_mode"));
      CHECK(contains(message, std::string("got ") + shown));
    }
  }
  REQUIRE_NOTHROW(PIDLock("x.lock", {.file_mode = 07777, .directory_mode = 0}));
  REQUIRE_NOTHROW(PIDLock("x.lock", {.file_mode = 0, .directory_mode = 07777}));
}

TEST_CASE("PIDLock constructor: valid edge values are accepted") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  {
    Options options;
    options.acquire_retry_delay = 0ms;
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  {
    Options options;
    options.invalid_lock_stale_threshold = 0ms;
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  {
    Options options;
    options.lease_stale_threshold = 3000ms;
    options.lease_heartbeat_interval = 2999ms;
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  {
    Options options;
    options.lease_heartbeat_interval = 1ms;
    options.lease_stale_threshold = 2ms;
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  {
    Options options;
    options.acquire_retry_limit = 1;
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  {
    Options options;
    options.file_mode = static_cast<fs::perms>(07777);
    options.directory_mode = static_cast<fs::perms>(07777);
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  {
    Options options;
    options.held_error = {};  // {} means the default
    REQUIRE_NOTHROW(PIDLock(path, options));
  }
  REQUIRE_NOTHROW(PIDLock("relative.lock"));
  REQUIRE_NOTHROW(PIDLock("dir/.hidden.lock"));
  REQUIRE_NOTHROW(PIDLock("/abs/path/x..lock"));
}

TEST_CASE("PIDLock constructor: constructing and destroying never touches the file system") {
  scratch_dir dir;
  for (const fs::path& path : {dir.path / "x.lock", dir.path / "missing" / "parent" / "x.lock"}) {
    INFO("path " << path.string());
    {
      PIDLock lock{path};
      CHECK(lock.path() == path);
      CHECK_FALSE(lock.held());
      CHECK(dir.entries().empty());
    }
    CHECK(dir.entries().empty());
    Options invalid;
    invalid.acquire_retry_limit = 0;
    CHECK_THROWS_AS(PIDLock(path, invalid), std::invalid_argument);
    CHECK(dir.entries().empty());
  }
}

// ---------------------------------------------------------------------------
// Error category and codes
// ---------------------------------------------------------------------------

TEST_CASE("error_category: is named lockfile and is one object") {
  CHECK(std::string(lockfile::error_category().name()) == "lockfile");
  CHECK(&lockfile::error_category() == &lockfile::error_category());
  CHECK(lockfile::make_error_code(lockfile::errc::lock_held).category() == lockfile::error_category());
  static_assert(noexcept(lockfile::error_category()));
  static_assert(noexcept(lockfile::make_error_code(lockfile::errc::lock_held)));
}

TEST_CASE("errc: the values are those of DESIGN.md and convert implicitly to std::error_code") {
  static_assert(std::is_error_code_enum_v<lockfile::errc>);
  static_assert(static_cast<int>(lockfile::errc::lock_held) == 1);
  static_assert(static_cast<int>(lockfile::errc::retry_limit_exceeded) == 2);
  static_assert(static_cast<int>(lockfile::errc::lease_lost) == 3);
  std::error_code ec = lockfile::errc::lock_held;
  CHECK(ec.value() == 1);
  CHECK(ec.category() == lockfile::error_category());
  CHECK(static_cast<bool>(ec));
  ec = lockfile::errc::lease_lost;
  CHECK(ec == lockfile::errc::lease_lost);
  CHECK(ec != lockfile::errc::lock_held);
}

TEST_CASE("error_category: each errc has its own non-empty message, an unknown value does not throw") {
  std::set<std::string> messages;
  for (auto value : {lockfile::errc::lock_held, lockfile::errc::retry_limit_exceeded,
                     lockfile::errc::lease_lost}) {
    const auto message = lockfile::make_error_code(value).message();
    INFO("errc " << static_cast<int>(value) << ": " << message);
    CHECK_FALSE(message.empty());
    messages.insert(message);
  }
  CHECK(messages.size() == 3);
  for (int unknown : {0, 4, 99, -1, INT_MAX}) {
    INFO("unknown value " << unknown);
    std::string message;
    REQUIRE_NOTHROW(message = lockfile::error_category().message(unknown));
    CHECK_FALSE(message.empty());
    CHECK(messages.count(message) == 0);
  }
}

TEST_CASE("error_category: lock_held and retry_limit_exceeded mean try again (EAGAIN), lease_lost does not") {
  using lockfile::errc;
  const auto try_again = std::errc::resource_unavailable_try_again;
  CHECK(lockfile::make_error_code(errc::lock_held) == try_again);
  CHECK(try_again == lockfile::make_error_code(errc::lock_held));
  CHECK(lockfile::make_error_code(errc::retry_limit_exceeded) == try_again);
  CHECK(lockfile::make_error_code(errc::lease_lost) != try_again);
  CHECK(lockfile::make_error_code(errc::lock_held) != std::errc::permission_denied);
  CHECK(lockfile::make_error_code(errc::lease_lost) != std::errc::permission_denied);
  // The system's own EAGAIN code is not one of ours.
  CHECK(std::make_error_code(std::errc::resource_unavailable_try_again) != errc::lock_held);
  // lease_lost's condition stays in the lockfile category.
  const auto condition = lockfile::make_error_code(errc::lease_lost).default_error_condition();
  CHECK(condition.category() == lockfile::error_category());
  CHECK(condition.value() == static_cast<int>(errc::lease_lost));
}

// ---------------------------------------------------------------------------
// lock_held_error
// ---------------------------------------------------------------------------

TEST_CASE("lock_held_error: names the path, the holder's pid, host and heartbeat age") {
  Lease holder;
  holder.owner_id = "owner-1";
  holder.pid = 4242;
  holder.host = "build-7";
  holder.heartbeat = std::chrono::system_clock::now();
  const fs::path path = "/var/lock/app.lock";
  const lockfile::lock_held_error error(path, lockfile::errc::lock_held, holder, 1500ms);
  CHECK(error.code() == lockfile::errc::lock_held);
  CHECK(error.path1() == path);
  REQUIRE(error.holder().has_value());
  CHECK(*error.holder() == holder);
  const std::string what = error.what();
  INFO("what(): " << what);
  CHECK(contains(what, path.string()));
  CHECK(contains(what, "pid 4242"));
  CHECK(contains(what, "build-7"));
  CHECK(contains(what, "1500"));
}

TEST_CASE("lock_held_error: without a valid record the holder is empty and the message says so") {
  const fs::path path = "/var/lock/garbage.lock";
  const lockfile::lock_held_error error(path, lockfile::errc::lock_held, std::nullopt, 200ms);
  CHECK(error.code() == lockfile::errc::lock_held);
  CHECK(error.path1() == path);
  CHECK_FALSE(error.holder().has_value());
  const std::string what = error.what();
  INFO("what(): " << what);
  CHECK(contains(what, path.string()));
  CHECK_FALSE(contains(what, "pid "));
}

TEST_CASE("lock_held_error: code() is whatever held_error the lock was given") {
  const auto busy = std::make_error_code(std::errc::device_or_resource_busy);
  const lockfile::lock_held_error error("x.lock", busy, std::nullopt, 0ns);
  CHECK(error.code() == busy);
  CHECK(error.code() == std::errc::device_or_resource_busy);
}

TEST_CASE("lock_held_error: is a filesystem_error, and copying it cannot throw") {
  static_assert(std::is_base_of_v<fs::filesystem_error, lockfile::lock_held_error>);
  static_assert(std::is_base_of_v<std::system_error, lockfile::lock_held_error>);
  static_assert(std::is_nothrow_copy_constructible_v<lockfile::lock_held_error>);
  static_assert(noexcept(std::declval<const lockfile::lock_held_error&>().holder()));

  Lease holder;
  holder.owner_id = "o";
  holder.pid = 7;
  holder.heartbeat = std::chrono::system_clock::now();
  try {
    throw lockfile::lock_held_error("held.lock", lockfile::errc::lock_held, holder, 1s);
  } catch (const fs::filesystem_error& e) {
    CHECK(e.code() == lockfile::errc::lock_held);
    CHECK(e.path1() == fs::path("held.lock"));
    const auto* typed = dynamic_cast<const lockfile::lock_held_error*>(&e);
    REQUIRE(typed != nullptr);
    const lockfile::lock_held_error copy = *typed;
    CHECK(std::string(copy.what()) == e.what());
    REQUIRE(copy.holder().has_value());
    CHECK(copy.holder()->pid == 7);
  }
}

// ---------------------------------------------------------------------------
// inspect(path)
// ---------------------------------------------------------------------------

TEST_CASE("inspect: a missing lock file is free, with no lease") {
  scratch_dir dir;
  for (const fs::path& path : {dir.path / "x.lock", dir.path / "no" / "such" / "dir" / "x.lock"}) {
    INFO("path " << path.string());
    const auto status = lockfile::inspect(path);
    CHECK(status.state == LockState::free);
    CHECK_FALSE(status.lease.has_value());
    CHECK(status.age == 0ns);
  }
  CHECK(dir.entries().empty());  // and nothing was created
}

TEST_CASE("inspect: a fresh record of a live owner is held, with the lease and a small age") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  const Lease lease = live_lease(std::chrono::system_clock::now());
  write_file(path, lockfile::format_lease(lease));
  const auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::held);
  REQUIRE(status.lease.has_value());
  CHECK(*status.lease == *round_tripped(lease));
  CHECK(status.age >= 0ns);
  CHECK(status.age < 2s);
}

TEST_CASE("inspect: a record whose heartbeat is an hour old is stale, with an age of about an hour") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  const Lease lease = live_lease(std::chrono::system_clock::now() - 1h);
  write_file(path, lockfile::format_lease(lease));  // the file's mtime is fresh: it does not count
  const auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::stale);
  REQUIRE(status.lease.has_value());
  CHECK(status.lease->owner_id == lease.owner_id);
  CHECK(status.age >= 1h);
  CHECK(status.age < 1h + 1min);
}

TEST_CASE("inspect: a lease is fresh until the larger of the caller's and the record's stale thresholds") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  Lease lease = live_lease(std::chrono::system_clock::now() - 5s);
  write_file(path, lockfile::format_lease(lease));
  CHECK(inspect_unchanged(dir, path).state == LockState::stale);  // 5 s > default 3 s
  Options longer;
  longer.lease_stale_threshold = 10s;
  CHECK(inspect_unchanged(dir, path, longer).state == LockState::held);

  lease.stale_threshold = 10s;  // the owner said it renews within 10 s
  write_file(path, lockfile::format_lease(lease));
  CHECK(inspect_unchanged(dir, path).state == LockState::held);
}

TEST_CASE("inspect: garbage just written is held, with no lease and its mtime age") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  for (const std::string& garbage :
       {std::string("{\"ownerID\":\"o"), std::string(), std::string("{\"version\":1"),
        std::string("\x00\x00\x00", 3)}) {
    INFO("garbage of " << garbage.size() << " bytes");
    write_file(path, garbage);
    const auto status = inspect_unchanged(dir, path);
    CHECK(status.state == LockState::held);
    CHECK_FALSE(status.lease.has_value());
    CHECK(status.age >= 0ns);
    CHECK(status.age < 1200ms);
  }
}

TEST_CASE("inspect: garbage last modified longer ago than invalid_lock_stale_threshold is stale") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  write_file(path, "{\"version\":1");
  set_mtime(path, -10s);
  auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::stale);
  CHECK_FALSE(status.lease.has_value());
  CHECK(status.age >= 10s);
  CHECK(status.age < 10s + 1min);

  Options patient;
  patient.invalid_lock_stale_threshold = 60s;
  status = inspect_unchanged(dir, path, patient);
  CHECK(status.state == LockState::held);
  CHECK(status.age >= 10s);
}

TEST_CASE("inspect: an oversized file is invalid even when it starts with a valid record") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  const std::string record = lockfile::format_lease(live_lease(std::chrono::system_clock::now()));
  const std::size_t limit = 64 * 1024;

  write_file(path, record + std::string(limit - record.size(), ' '));  // exactly 64 KiB
  auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::held);
  CHECK(status.lease.has_value());

  write_file(path, record + std::string(limit + 1 - record.size(), ' '));  // 64 KiB + 1
  status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::held);  // invalid, but freshly modified
  CHECK_FALSE(status.lease.has_value());
  set_mtime(path, -10s);
  CHECK(inspect_unchanged(dir, path).state == LockState::stale);
}

TEST_CASE("inspect: a heartbeat an hour in the future (clock skew) is judged by the file's mtime") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  const Lease lease = live_lease(std::chrono::system_clock::now() + 1h);
  write_file(path, lockfile::format_lease(lease));
  auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::held);
  REQUIRE(status.lease.has_value());
  CHECK(status.lease->owner_id == lease.owner_id);
  CHECK(status.age >= 0ns);
  CHECK(status.age < 2s);

  set_mtime(path, -1h);
  status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::stale);
  CHECK(status.lease.has_value());
  CHECK(status.age >= 1h);
  CHECK(status.age < 1h + 1min);
}

TEST_CASE("inspect: a heartbeat slightly in the future (within the threshold) is judged by the heartbeat, not the mtime") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  write_file(path, lockfile::format_lease(live_lease(std::chrono::system_clock::now() + 1s)));
  set_mtime(path, -1h);  // not used: the skew is within the stale threshold
  const auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::held);
  CHECK(status.lease.has_value());
  CHECK(status.age < 2s);  // not the mtime's hour
}

TEST_CASE("inspect: a record claiming the largest staleThresholdNano is judged without overflow") {
  // The record's threshold is taken when larger than ours; an absurd one must
  // not overflow the time arithmetic (build with -fsanitize=undefined to see).
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  Lease lease = live_lease(std::chrono::system_clock::now());
  lease.stale_threshold = std::chrono::nanoseconds::max();
  write_file(path, lockfile::format_lease(lease));
  const auto status = inspect_unchanged(dir, path);
  CHECK(status.state == LockState::held);
  REQUIRE(status.lease.has_value());
  CHECK(status.lease->stale_threshold == std::chrono::nanoseconds::max());
}

TEST_CASE("inspect: process_appears_alive is not consulted for a record from another boot") {
  scratch_dir dir;
  const fs::path path = dir.path / "x.lock";
  Lease lease = live_lease(std::chrono::system_clock::now());
  lease.boot_id = "another-machine-boot-id";
  lease.pid_namespace = 1;
  lease.start_time = 1;
  write_file(path, lockfile::format_lease(lease));
  int calls = 0;
  Options options;
  options.process_appears_alive = [&calls](int) {
    ++calls;
    return false;
  };
  CHECK(inspect_unchanged(dir, path, options).state == LockState::held);
  CHECK(calls == 0);
}

TEST_CASE("inspect: a directory or a symbolic link at the path is an error, not a free lock") {
  scratch_dir dir;
  const fs::path directory = dir.path / "dir.lock";
  fs::create_directory(directory);
  CHECK_THROWS_AS(lockfile::inspect(directory), fs::filesystem_error);

  const fs::path target = dir.path / "target";
  write_file(target, lockfile::format_lease(live_lease(std::chrono::system_clock::now())));
  const fs::path link = dir.path / "link.lock";
  fs::create_symlink(target, link);
  try {
    (void)lockfile::inspect(link);
    FAIL("inspect followed a symbolic link");
  } catch (const fs::filesystem_error& e) {
    CHECK(e.code() == std::errc::too_many_symbolic_link_levels);
    CHECK(e.path1() == link);
  }
  CHECK(fs::is_symlink(fs::symlink_status(link)));
}

TEST_CASE("file_system_kind: tmpfs is local, /proc is not, a missing directory is decided by its ancestor") {
  // The portable path reads no file-system kinds: every file system takes
  // the network path, which is correct everywhere, only slower.
  const auto tmpfs_kind =
      lockfile_test::linux_extras ? lockfile::FileSystemKind::local : lockfile::FileSystemKind::network;
  struct statfs shm {};
  if (::statfs("/dev/shm", &shm) == 0 && static_cast<std::uint32_t>(shm.f_type) == 0x01021994U) {
    CHECK(lockfile::file_system_kind("/dev/shm/x.lock") == tmpfs_kind);
    CHECK(lockfile::file_system_kind("/dev/shm/no/such/dir/x.lock") == tmpfs_kind);
  }
  // Not a file system for lock files, and not on the list: the network path.
  CHECK(lockfile::file_system_kind("/proc/self/x.lock") == lockfile::FileSystemKind::network);
  CHECK(lockfile::file_system_kind("/proc/no/such/dir/x.lock") == lockfile::FileSystemKind::network);
}
