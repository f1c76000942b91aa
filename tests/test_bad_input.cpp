// Bad input and hostile file systems: each is a clear error, and nothing
// that is not ours is removed or changed.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <grp.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/mount.h>

#include <fstream>

using namespace lockfile_test;
using lockfile::PIDLock;

namespace {

// The errno of a failed acquire, or 0; checks the error names path and operation.
int acquire_errno(const fs::path& path, const std::string& operation) {
  PIDLock lock(path);
  try {
    lock.acquire();
    return 0;
  } catch (const lockfile::lock_held_error&) {
    return -1;
  } catch (const fs::filesystem_error& e) {
    CHECK(e.path1() == path);
    CHECK(std::string(e.what()).find(operation) != std::string::npos);
    return e.code().category() == std::system_category() ? e.code().value() : -2;
  }
}

// Runs body in a child as an unprivileged user (CI runs as root, and root
// ignores permission bits); its exit code.
int as_unprivileged(const std::function<int()>& body) {
  return wait_exit(fork_child([&] {
    if (::geteuid() == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return 90;
    }
    return body();
  }));
}

}  // namespace

TEST_CASE("a symbolic link at the path is refused (ELOOP), never followed or removed") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  SECTION("dangling link") {
    fs::create_symlink(dir / "target", path);
    CHECK(acquire_errno(path, "open lock file") == ELOOP);
    CHECK_FALSE(fs::exists(dir / "target"));
  }
  SECTION("link to a stale lock file") {
    const auto record = foreign_record(std::chrono::system_clock::now() - 1h);
    write_file(dir / "target", record);
    fs::create_symlink(dir / "target", path);
    CHECK(acquire_errno(path, "open lock file") == ELOOP);
    CHECK(read_file(dir / "target") == record);
  }
  CHECK(fs::is_symlink(fs::symlink_status(path)));
  CHECK_THROWS_AS(lockfile::inspect(path), fs::filesystem_error);
  PIDLock lock(path);
  CHECK_THROWS_AS(lock.try_lock(), fs::filesystem_error);
  CHECK_THROWS_AS(lock.lock(), fs::filesystem_error);  // waiting calls throw, never wait
  CHECK(fs::is_symlink(fs::symlink_status(path)));
}

TEST_CASE("a directory at the path is an error (EISDIR) and is left alone") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  fs::create_directory(path);
  write_file(path / "inside", "x");
  CHECK(acquire_errno(path, "lock file") == EISDIR);
  CHECK(fs::is_directory(path));
  CHECK(read_file(path / "inside") == "x");
}

TEST_CASE("a FIFO at the path is an error, not a hang") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  REQUIRE(::mkfifo(path.c_str(), 0644) == 0);
  CHECK(acquire_errno(path, "not a regular file") == EINVAL);
  CHECK(fs::is_fifo(path));
}

TEST_CASE("a lock file the caller cannot read is an error, not a free lock, and is kept") {
  temp_dir dir;
  fs::permissions(dir.path(), fs::perms::all);  // others may create files here
  const auto path = dir / "app.lock";
  const auto record = foreign_record(std::chrono::system_clock::now() - 1h);  // stale, even
  write_file(path, record);
  fs::permissions(path, fs::perms::none);
  const int code = as_unprivileged([&] {
    PIDLock lock(path);
    std::error_code ec;
    lock.acquire(ec);
    if (ec != std::errc::permission_denied) return 1;
    try {
      lockfile::inspect(path);
      return 2;
    } catch (const fs::filesystem_error& e) {
      return e.code() == std::errc::permission_denied ? 0 : 3;
    }
  });
  CHECK(code == 0);
  fs::permissions(path, fs::perms::owner_read);
  CHECK(read_file(path) == record);
  CHECK(dir.entries() == std::set<std::string>{"app.lock"});
}

TEST_CASE("a read-only parent directory gives an error and leaves no file") {
  temp_dir dir;
  fs::permissions(dir.path(), static_cast<fs::perms>(0755));
  const auto locked_dir = dir / "ro";
  fs::create_directory(locked_dir);
  fs::permissions(locked_dir, static_cast<fs::perms>(0555));
  const int code = as_unprivileged([&] {
    PIDLock lock(locked_dir / "app.lock");
    try {
      lock.acquire();
      return 1;
    } catch (const fs::filesystem_error& e) {
      if (std::string(e.what()).find("create lock file") == std::string::npos) return 2;
      return e.code() == std::errc::permission_denied ? 0 : 3;
    }
  });
  CHECK(code == 0);
  CHECK(fs::is_empty(locked_dir));

  // A missing directory that cannot be created: the error names that step.
  const int nested = as_unprivileged([&] {
    std::error_code ec;
    PIDLock lock(locked_dir / "sub" / "app.lock");
    lock.acquire(ec);
    return ec == std::errc::permission_denied ? 0 : 1;
  });
  CHECK(nested == 0);
  CHECK(fs::is_empty(locked_dir));
}

TEST_CASE("a regular file where a parent directory should be is an error") {
  temp_dir dir;
  write_file(dir / "file", "x");
  std::error_code ec;
  PIDLock lock(dir.path() / "file" / "app.lock");
  lock.acquire(ec);
  CHECK(ec == std::errc::not_a_directory);
  CHECK(read_file(dir / "file") == "x");
}

namespace {

// Runs body in a child with a private mount namespace and a fresh tmpfs
// (mount options as given) mounted on dir; the mount dies with the child.
// 77 when this machine does not let us mount (not root, no CAP_SYS_ADMIN).
int on_private_tmpfs(const fs::path& dir, const char* options, const std::function<int()>& body) {
  return wait_exit(fork_child([&] {
    if (::unshare(CLONE_NEWNS) != 0) return 77;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options) != 0) return 77;
    return body();
  }));
}

}  // namespace

TEST_CASE("a full file system (ENOSPC) gives an error and leaves no file") {
  temp_dir dir;
  const int code = on_private_tmpfs(dir.path(), "size=64k", [&] {
    // Fill it up, then try.
    {
      std::ofstream filler(dir / "filler", std::ios::binary);
      const std::string block(4096, 'x');
      while (filler.write(block.data(), static_cast<std::streamsize>(block.size()))) {
      }
    }
    const auto before = dir.entries();
    PIDLock lock(dir / "app.lock");
    std::error_code ec;
    lock.acquire(ec);
    if (ec != std::errc::no_space_on_device) return 1;
    if (dir.entries() != before) return 2;  // no lock file, no temporary file
    try {
      lock.acquire();
      return 3;
    } catch (const fs::filesystem_error& e) {
      return std::string(e.what()).find("lock file") != std::string::npos ? 0 : 4;
    }
  });
  if (code == 77) LOCKFILE_SKIP("cannot mount a tmpfs here (needs root and a mount namespace)");
  CHECK(code == 0);
}

TEST_CASE("a read-only file system (EROFS) gives an error and leaves no file") {
  temp_dir dir;
  const int code = on_private_tmpfs(dir.path(), "size=64k", [&] {
    if (::mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0) return 77;
    PIDLock lock(dir / "app.lock");
    std::error_code ec;
    lock.acquire(ec);
    if (ec != std::errc::read_only_file_system) return 1;
    return dir.entries().empty() ? 0 : 2;
  });
  if (code == 77) LOCKFILE_SKIP("cannot mount a tmpfs here (needs root and a mount namespace)");
  CHECK(code == 0);
}

TEST_CASE("when the heartbeat thread cannot be started, the acquisition is undone and reported") {
  // Without renewal the lease would silently expire under a holder that
  // believes it holds: the file is removed and the error thrown instead.
  temp_dir dir;
  fs::permissions(dir.path(), fs::perms::all);  // nobody may create files here
  const int code = as_unprivileged([&] {
    // No new process or thread for this user: pthread_create fails (EAGAIN).
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_NPROC, &none) != 0) return 77;
    PIDLock lock(dir / "app.lock");
    std::error_code ec;
    lock.acquire(ec);
    if (!ec) return 1;
    if (lock.held()) return 2;
    if (!dir.entries().empty()) return 3;  // undone: no lock file, no temporary file
    try {
      lock.acquire();
      return 4;
    } catch (const fs::filesystem_error& e) {
      return std::string(e.what()).find("heartbeat thread") != std::string::npos ? 0 : 5;
    }
  });
  if (code == 77) LOCKFILE_SKIP("cannot limit processes here");
  CHECK(code == 0);
}
