// The POSIX platform (Linux, macOS, the BSDs): every POSIX call the library
// makes lives here. Functions report errno through std::error_code and never
// throw. Included by platform.hpp, which declares the interface; include
// lockfile.hpp.
#ifndef LOCKFILE_DETAIL_PLATFORM_POSIX_HPP
#define LOCKFILE_DETAIL_PLATFORM_POSIX_HPP

// The Linux extras: calls and files that exist on Linux only, each a fast
// path or a stronger check over what any POSIX system offers. One switch,
// LOCKFILE_LINUX_EXTRAS (defined here, undefined at the end of this file),
// turns all of them on or off; define LOCKFILE_PORTABLE_POSIX before
// including lockfile.hpp to turn them off on Linux too, so that the code
// macOS and the BSDs run is built and tested on Linux (CMake preset
// "portable"). What each one is, and what the portable path does instead:
//
//   O_TMPFILE + linkat(/proc/self/fd/N)  publish a record from an anonymous
//       inode. Portable: a private ".<name>.<owner>.tmp" file, then link().
//   O_PATH + reopen via /proc/self/fd  check a lock file's type before
//       opening it for reading. Portable: lstat() first, open with
//       O_NONBLOCK, then fstat() the opened file and check again.
//   statx(AT_STATX_FORCE_SYNC)  attributes from a network server, not a
//       client's cache. Portable: fstat() of a freshly opened file.
//   statfs() f_type  which file systems are local (flock and stat from one
//       kernel). Portable: every file system takes the network path.
//   /proc: boot id, PID namespace, /proc/PID/stat (start time, zombie
//       state), /proc/PID/status (threads)  prove a same-machine owner dead
//       at once. Portable: no boot id is known, so records carry none and
//       only the lease rule decides (takeover after the stale threshold).
//   inotify  wake a waiter when the lock file's name is removed. Portable:
//       waiters wake on their poll period.
//   pidfd_open  wake a waiter when a same-machine holder exits. Portable:
//       none (there is no same-machine identity to trust either).
//   eventfd  a waiter's wake-up descriptor. Portable: a pipe.
//   renameat2(RENAME_NOREPLACE)  put a moved-aside file back where link()
//       is unsupported. Portable: the file stays aside (its owner learns of
//       the loss at its next renewal).
//   O_NOATIME, pthread_setname_np(thread, name)  no atime writes on renewal
//       reads; names on the library's threads. Portable: neither.
//
// Nothing outside this file tests for the operating system; the tests see
// the switch as lockfile::detail::linux_extras.
#if defined(__linux__) && !defined(LOCKFILE_PORTABLE_POSIX)
#define LOCKFILE_LINUX_EXTRAS
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>  // NOLINT(modernize-deprecated-headers): POSIX sigset_t, pthread_sigmask
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <pthread.h>
#if defined(LOCKFILE_LINUX_EXTRAS)
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/timerfd.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#endif
#else
#error "lockfile needs a POSIX system (link, flock, O_NOFOLLOW)"
#endif

namespace lockfile::detail {

// Whether the Linux extras are compiled in (see the top of this file).
#if defined(LOCKFILE_LINUX_EXTRAS)
inline constexpr bool linux_extras = true;
#else
inline constexpr bool linux_extras = false;
#endif

inline std::error_code errno_code(int value = errno) { return {value, std::system_category()}; }

// EOPNOTSUPP and ENOTSUP: one value on Linux, two elsewhere (BSDs, macOS).
inline bool not_supported(int error) {
  return error == EOPNOTSUPP || error == ENOTSUP;  // NOLINT(misc-redundant-expression): equal on Linux only
}

// What the platform interface passes around for an open file or a process
// (platform.hpp): a descriptor here, a HANDLE on Windows; no_handle for none.
using native_handle = int;
inline constexpr native_handle no_handle = -1;

// A new file's or directory's permission bits (the umask applies).
using mode_bits = mode_t;

// Owns one file descriptor; closes it on destruction.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // Gives up ownership without closing (-1 when empty).
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);  // even on EINTR the descriptor is gone (Linux)
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

using publication = basic_publication<unique_fd>;
using observed_file = basic_observed_file<unique_fd>;

// Every open goes through here: never leak the descriptor into an exec'd
// child, and never follow a symbolic link at the last component of a lock
// file's name. (The lock's directory may be reached through one: /var/lock
// is a link to /run/lock on many systems.)
enum class last_component { no_follow, follow };

inline int open_file(const char* path, int flags, mode_t mode = 0,
                     last_component last = last_component::no_follow) {
  if (last == last_component::no_follow) flags |= O_NOFOLLOW;
  int fd = -1;
  do fd = ::open(path, flags | O_CLOEXEC | O_NOCTTY, mode);
  while (fd < 0 && errno == EINTR);
  return fd;
}

// For the files we create: every renewal reads our own file after writing
// it, and under relatime each such read would also write the inode's atime.
// (Permitted to the file's owner, which the creator is.)
#if defined(LOCKFILE_LINUX_EXTRAS) && defined(O_NOATIME)
inline constexpr int no_atime = O_NOATIME;
#else
inline constexpr int no_atime = 0;
#endif

inline mode_t to_mode(std::filesystem::perms perms) {
  return static_cast<mode_t>(perms & std::filesystem::perms::mask);
}

inline file_facts facts_from(const struct stat& st) {
  file_facts facts;
  facts.identity = {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
  facts.regular = S_ISREG(st.st_mode);
  facts.directory = S_ISDIR(st.st_mode);
  facts.symlink = S_ISLNK(st.st_mode);
  facts.links = static_cast<std::uint64_t>(st.st_nlink);
  facts.owner = static_cast<std::uint32_t>(st.st_uid);
#if defined(__APPLE__)
  const auto& mtime = st.st_mtimespec;
  const auto& ctime = st.st_ctimespec;
#else
  const auto& mtime = st.st_mtim;
  const auto& ctime = st.st_ctim;
#endif
  facts.modified = from_file_time(mtime.tv_sec, mtime.tv_nsec);
  facts.changed = from_file_time(ctime.tv_sec, ctime.tv_nsec);
  return facts;
}

inline std::error_code stat_fd(int fd, file_facts& out) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_code();
  out = facts_from(st);
  return {};
}

// lstat: a symbolic link at the path is reported as such, never followed.
inline std::error_code stat_path(const std::filesystem::path& path, file_facts& out) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno_code();
  out = facts_from(st);
  return {};
}

// fstat that does not trust the client's attribute cache: on a network file
// system (and FUSE) fstat may answer from a cache, or for the name rather
// than the open file. statx with AT_STATX_FORCE_SYNC asks the server.
inline std::error_code stat_fd_fresh(int fd, file_facts& out) {
#if defined(LOCKFILE_LINUX_EXTRAS) && defined(STATX_BASIC_STATS) && defined(AT_STATX_FORCE_SYNC)
  struct statx st {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &st) == 0) {
    out.identity = {static_cast<std::uint64_t>(makedev(st.stx_dev_major, st.stx_dev_minor)), st.stx_ino};
    out.regular = S_ISREG(st.stx_mode);
    out.directory = S_ISDIR(st.stx_mode);
    out.symlink = S_ISLNK(st.stx_mode);
    out.links = st.stx_nlink;
    out.owner = st.stx_uid;
    out.modified = from_file_time(st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec);
    out.changed = from_file_time(st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec);
    return {};
  }
  if (errno != ENOSYS) return errno_code();
#endif
  return stat_fd(fd, out);
}

// Reads from offset 0 up to limit + 1 bytes, so that "larger than limit" is
// known without reading a large file whole. The buffer starts small and
// grows: a lease record is a few hundred bytes, and zero-filling 64 KiB on
// every renewal would cost more than the read. A short read of a regular
// file means its end.
inline std::error_code read_prefix(int fd, std::string& out, std::size_t limit) {
  const std::size_t cap = limit + 1;
  out.resize(std::min<std::size_t>(cap, 1024));
  std::size_t got = 0;
  for (;;) {
    const std::size_t want = out.size() - got;
    const ssize_t n = ::pread(fd, out.data() + got, want, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      const auto ec = errno_code();
      out.clear();
      return ec;
    }
    got += static_cast<std::size_t>(n);
    if (static_cast<std::size_t>(n) < want || got == cap) break;
    out.resize(std::min(cap, out.size() * 4));
  }
  out.resize(got);
  return {};
}

inline std::error_code write_at(int fd, std::string_view bytes, std::uint64_t at) {
  auto offset = static_cast<off_t>(at);
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_code();
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
    offset += n;
  }
  return {};
}

inline std::error_code truncate_to(int fd, std::size_t size) {
  int rc = 0;
  do rc = ::ftruncate(fd, static_cast<off_t>(size));
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? std::error_code{} : errno_code();
}

// flock, not fcntl locks: those belong to the process, so two locks in one
// process would not exclude each other.
inline flock_result try_flock(int fd, std::error_code& ec) {
  int rc = 0;
  do rc = ::flock(fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc == 0) return flock_result::locked;
  if (errno == EWOULDBLOCK) return flock_result::busy;
  ec = errno_code();
  if (errno == ENOLCK || not_supported(errno)) return flock_result::unsupported;
  return flock_result::failed;
}

inline void unlock_flock(int fd) { ::flock(fd, LOCK_UN); }


inline std::error_code remove_name(const std::filesystem::path& path) {
  return ::unlink(path.c_str()) == 0 ? std::error_code{} : errno_code();
}

// Unlinks path if it still names fd's inode, checked under fd's flock (the
// lock's removal rule) — for undoing our own just-created file. Busy or
// changed: left alone, to go stale.
inline void unlink_if_names(int fd, const std::filesystem::path& path) {
  std::error_code ec;
  const auto locked = try_flock(fd, ec);
  if (locked == flock_result::busy || locked == flock_result::failed) return;
  file_facts mine;
  file_facts named;
  if (!stat_fd(fd, mine) && !stat_path(path, named) && mine.identity == named.identity) remove_name(path);
  if (locked == flock_result::locked) unlock_flock(fd);
}

// "uid 1 (daemon)": a file owner for an error message.
inline std::string describe_user(std::uint32_t uid) {
  std::string text = "uid " + std::to_string(uid);
  passwd entry{};
  passwd* found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr && found->pw_name)
    text.append(" (").append(found->pw_name).append(")");
  return text;
}

// Why a removal was refused, for the error message: in a sticky directory
// only a file's owner (or root) may unlink it.
inline std::string removal_refused_hint(const file_facts& facts) {
  return " (owned by " + describe_user(facts.owner) +
         "; only its owner or root may remove it from a sticky directory such as /tmp: "
         "use a lock directory that every user of the lock may write, without the sticky bit)";
}

// unlink() never refuses a name because a process has the file open.
inline bool removal_in_use(const std::error_code& /*ec*/) { return false; }
inline constexpr const char* removal_in_use_hint = "another process kept checking it";

// mkdir -p: every missing level is created with mode (the umask applies).
// NOLINTNEXTLINE(misc-no-recursion): one level per path component
inline std::error_code make_directories(const std::filesystem::path& dir, mode_t mode) {
  if (dir.empty()) return {};
  if (::mkdir(dir.c_str(), mode) == 0) return {};
  if (errno == EEXIST) return {};
  if (errno != ENOENT) return errno_code();
  const auto parent = dir.parent_path();
  if (parent == dir) return errno_code(ENOENT);
  if (auto ec = make_directories(parent, mode)) return ec;
  if (::mkdir(dir.c_str(), mode) == 0 || errno == EEXIST) return {};
  return errno_code();
}

inline bool known_local_file_system(std::uint32_t magic) {
  switch (magic) {
    case 0xEF53U:      // ext2, ext3, ext4
    case 0x58465342U:  // xfs
    case 0x9123683EU:  // btrfs
    case 0x01021994U:  // tmpfs
    case 0x858458F6U:  // ramfs
    case 0x794C7630U:  // overlayfs
    case 0xF2F52010U:  // f2fs
    case 0x2FC12FC1U:  // zfs
    case 0xCA451A4EU:  // bcachefs
      return true;
    default:
      return false;
  }
}

// Decided on dir, or while dir does not exist yet on its nearest existing
// ancestor (where it will be created). Unknown means network: the network
// path is correct everywhere, only slower.
inline fs_path_decision decide_fs_path(const std::filesystem::path& dir) {
  fs_path_decision out;
#if defined(LOCKFILE_LINUX_EXTRAS)
  auto at = dir.empty() ? std::filesystem::path(".") : dir;
  for (bool first = true;; first = false) {
    struct statfs fs {};
    if (::statfs(at.c_str(), &fs) == 0) {
      out.path = known_local_file_system(static_cast<std::uint32_t>(fs.f_type)) ? fs_path::local
                                                                                  : fs_path::network;
      out.final = first;
      return out;
    }
    if (errno != ENOENT) return out;
    auto parent = at.parent_path();
    if (parent.empty() || parent == at) return out;
    at = std::move(parent);
  }
#else
  (void)dir;
  return out;
#endif
}

// A file that is gone: ENOENT, or ESTALE from a network file system whose
// server removed it (its file handle is no longer known). Both are
// "vanished", which callers retry.
inline std::error_code vanished_as_enoent(std::error_code ec) {
  return ec == std::errc::no_such_file_or_directory || ec.value() == ESTALE
             ? std::make_error_code(std::errc::no_such_file_or_directory)
             : ec;
}

// rename(2) for moving a file aside; ENOENT when it vanished first.
inline std::error_code move_name(const std::filesystem::path& from, const std::filesystem::path& to) {
  return ::rename(from.c_str(), to.c_str()) == 0 ? std::error_code{} : vanished_as_enoent(errno_code());
}

// Gives a moved-aside file its name back: link(), or where the file system
// has no hard links, a rename that refuses to replace. When the name has
// been taken meanwhile (EEXIST), the aside name is removed: the file's owner
// has lost the lock and learns it at its next renewal. On any other failure
// the file stays aside, for its owner's renewal to find the path gone and
// for a later sweep; removing it then would destroy a file someone renewed.
inline void put_back(const std::filesystem::path& aside, const std::filesystem::path& path) {
  if (::link(aside.c_str(), path.c_str()) == 0) {
    remove_name(aside);
    return;
  }
  int error = errno;
#if defined(LOCKFILE_LINUX_EXTRAS) && defined(RENAME_NOREPLACE)
  if (error == EPERM || not_supported(error)) {
    if (::renameat2(AT_FDCWD, aside.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) return;
    error = errno;
  }
#endif
  if (error == EEXIST) remove_name(aside);
}

// The names in dir that start with prefix. A listing cut short by an error
// is that error: a fencing token taken from a partial listing could be lower
// than one already handed out.
inline std::error_code list_names(const std::filesystem::path& dir, std::string_view prefix,
                                  std::vector<std::string>& names) {
  names.clear();
  const int fd = open_file(dir.c_str(), O_RDONLY | O_DIRECTORY, 0, last_component::follow);
  if (fd < 0) return errno_code();
  DIR* listing = ::fdopendir(fd);
  if (listing == nullptr) {
    const auto error = errno_code();
    ::close(fd);
    return error;
  }
  // readdir is safe on a stream no other thread uses (POSIX.1-2008 TC2).
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(listing);  // NOLINT(concurrency-mt-unsafe)
    if (entry == nullptr) break;
    const std::string_view name = entry->d_name;
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  }
  const int error = errno;
  ::closedir(listing);
  return error == 0 ? std::error_code{} : errno_code(error);
}

// The names in dir that start with prefix (for sweeping protocol
// leftovers): what could be listed.
inline std::vector<std::string> names_starting_with(const std::filesystem::path& dir, std::string_view prefix) {
  std::vector<std::string> names;
  (void)list_names(dir, prefix, names);
  return names;
}

// Writes bytes into a file nobody can see yet and links it to path in one
// step, so that no reader ever sees a partial record from a live owner.
// The portable fallback's private file is ".<name>.<owner>.tmp" beside
// lock_file (the lock file itself, or the one a claim is for), a name
// readers ignore and sweeping recognizes.
inline publication publish_new_file(const std::filesystem::path& path, std::string_view bytes,
                                    mode_t mode, const std::filesystem::path& lock_file, std::string_view owner) {
  publication out;
  const auto dir = path.parent_path();
  auto fail = [&](const char* operation, std::error_code ec) {
    out.fd.reset();
    out.error = ec;
    out.operation = operation;
    return std::move(out);
  };

#if defined(LOCKFILE_LINUX_EXTRAS) && defined(O_TMPFILE)
  // Linux: an anonymous inode, linked to its name only once complete.
  unique_fd anonymous(open_file(dir.c_str(), O_TMPFILE | O_RDWR | no_atime, mode, last_component::follow));
  if (anonymous) {
    if (auto ec = write_at(anonymous.get(), bytes, 0)) return fail("write lock file", ec);
    const std::string proc_name = "/proc/self/fd/" + std::to_string(anonymous.get());
    if (::linkat(AT_FDCWD, proc_name.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      out.fd = std::move(anonymous);
      return out;
    }
    const int link_errno = errno;
    if (link_errno == EEXIST) return fail("create lock file", errno_code(link_errno));
    // Without /proc or without link support, fall through to a named file.
    if (link_errno != ENOENT && link_errno != EPERM && !not_supported(link_errno))
      return fail("create lock file", errno_code(link_errno));
  } else if (errno != EISDIR && errno != EINVAL && !not_supported(errno)) {
    return fail("create lock file", errno_code());
  }
#endif

  // Portable: a private named file, linked into place, then unnamed again.
  const auto private_name = protocol_name(lock_file, owner, ".tmp");
  unique_fd named(open_file(private_name.c_str(), O_RDWR | O_CREAT | O_EXCL | no_atime, mode));
  if (!named) return fail("create lock file", errno_code());
  if (auto ec = write_at(named.get(), bytes, 0)) {
    named.reset();
    remove_name(private_name);
    return fail("write lock file", ec);
  }
  // Closed before it is linked: an NFS client sends the written bytes to
  // the server at close, so another host never reads the linked name empty;
  // and a network client keeps a file unlinked while open under a hidden
  // name (".nfsXXXX", ".fuse_hidden...") until it is closed.
  named.reset();
  if (::link(private_name.c_str(), path.c_str()) == 0) {
    remove_name(private_name);
    // The lock's descriptor is opened through its own name (FUSE file
    // systems on libfuse's path API tie a descriptor, and its flock, to the
    // name it was opened by). Nobody can take a record this fresh from us
    // in between.
    out.fd.reset(open_file(path.c_str(), O_RDWR | no_atime));
    if (!out.fd) {
      const auto ec = errno_code();
      remove_name(path);
      return fail("open lock file", ec);
    }
    return out;
  }
  const int link_errno = errno;
  remove_name(private_name);
  if (link_errno != EPERM && !not_supported(link_errno))
    return fail("create lock file", errno_code(link_errno));

  // No hard links here (some FUSE and SMB mounts): create in place. Readers
  // may see the file empty for a moment; the invalid-file rule covers that.
  unique_fd direct(open_file(path.c_str(), O_RDWR | O_CREAT | O_EXCL | no_atime, mode));
  if (!direct) return fail("create lock file", errno_code());
  if (auto ec = write_at(direct.get(), bytes, 0)) {
    unlink_if_names(direct.get(), path);
    return fail("write lock file", ec);
  }
  out.fd = std::move(direct);
  return out;
}

// On a network file system (fresh) the attributes come from the server, not
// from a cache; the file is opened anew either way, so that its bytes are
// read fresh too (NFS close-to-open consistency, FUSE's open). A file that
// vanishes between open and read (ENOENT, or ESTALE from a server that
// removed it) is reported as ENOENT: vanished, to be retried.
inline observed_file observe_file(const std::filesystem::path& path, fs_path kind = fs_path::local) {
  observed_file out;
  // The type first, through a descriptor that cannot read, write or block:
  // opening a FIFO, socket or device for reading could hang, fail with
  // ENXIO, or have effects of its own (a tty, a watchdog).
#if defined(LOCKFILE_LINUX_EXTRAS) && defined(O_PATH)
  const unique_fd handle(open_file(path.c_str(), O_PATH));
  if (!handle) {
    out.error = vanished_as_enoent(errno_code());
    out.operation = "open lock file";
    return out;
  }
  if ((out.error = vanished_as_enoent(stat_fd(handle.get(), out.facts)))) return out;
#else
  // Without O_PATH: the type by name, never following a link. Should the
  // name be swapped between this look and the open below, O_NONBLOCK keeps
  // that open from hanging and the fstat after it refuses the new type.
  if ((out.error = vanished_as_enoent(stat_path(path, out.facts)))) {
    out.operation = "open lock file";
    return out;
  }
#endif
  if (out.facts.symlink) {  // O_PATH|O_NOFOLLOW (or lstat) names the link itself
    out.error = errno_code(ELOOP);
    out.operation = "open lock file";
    return out;
  }
  const auto refuse_type = [&] {
    if (out.facts.directory) {
      out.error = errno_code(EISDIR);
      return true;
    }
    if (!out.facts.regular) {
      out.error = errno_code(EINVAL);
      out.operation = "read lock file (not a regular file)";
      return true;
    }
    return false;
  };
  if (refuse_type()) return out;  // before any open that could block or act
  // Read-write where permitted: NFS emulates flock with POSIX locks, which
  // need a writable descriptor. O_NONBLOCK: should the name be swapped for a
  // FIFO in between, it must not hang us.
  bool same_inode_as_checked = false;  // reopened through the handle: its facts still hold
  const auto open_for_reading = [&](int flags) {
#if defined(LOCKFILE_LINUX_EXTRAS) && defined(O_PATH)
    // The very inode just checked, reopened through its handle (a fresh open
    // on network file systems too); by name only where /proc is missing.
    const std::string reopen = "/proc/self/fd/" + std::to_string(handle.get());
    const int fd = open_file(reopen.c_str(), flags, 0, last_component::follow);
    same_inode_as_checked = fd >= 0;
    if (fd >= 0 || errno != ENOENT) return fd;
#endif
    return open_file(path.c_str(), flags);
  };
  out.fd.reset(open_for_reading(O_RDWR | O_NONBLOCK));
  if (!out.fd && (errno == EACCES || errno == EROFS || errno == EPERM || errno == ETXTBSY))
    out.fd.reset(open_for_reading(O_RDONLY | O_NONBLOCK));
  if (!out.fd) {
    out.error = vanished_as_enoent(errno_code());
    out.operation = "open lock file";
    return out;
  }
  // Locally, the handle's facts are the reopened file's; a network file
  // system's attributes are asked for again, fresh, now that it is open.
  if (kind == fs_path::network || !same_inode_as_checked) {
    out.error = kind == fs_path::network ? stat_fd_fresh(out.fd.get(), out.facts) : stat_fd(out.fd.get(), out.facts);
    if ((out.error = vanished_as_enoent(out.error))) return out;
    if (refuse_type()) return out;
  }
  out.error = vanished_as_enoent(read_prefix(out.fd.get(), out.bytes, max_record_bytes));
  return out;
}

// Reads a small text file whole (for /proc); empty on any failure.
inline std::string read_small_file(const char* path) {
  unique_fd fd(open_file(path, O_RDONLY));
  std::string text;
  if (!fd || read_prefix(fd.get(), text, 4096)) return {};
  return text;
}

inline std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0) return {};
  return buffer;
}

inline std::string boot_id() {
#if defined(LOCKFILE_LINUX_EXTRAS)
  auto text = read_small_file("/proc/sys/kernel/random/boot_id");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
#else
  return {};
#endif
}

inline std::uint64_t pid_namespace() {
#if defined(LOCKFILE_LINUX_EXTRAS)
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
#else
  return 0;
#endif
}

// What /proc/PID/stat says of a process: its state letter and start time.
struct proc_stat {
  char state = '?';
  std::uint64_t start_time = 0;
};

// The command name (field 2) may hold spaces and parentheses: fields after it
// are counted from the last ')'.
inline std::optional<proc_stat> parse_proc_stat(std::string_view text) {
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  text.remove_prefix(close + 1);
  proc_stat out;
  for (int field = 3; field <= 22; ++field) {
    const auto begin = text.find_first_not_of(' ');
    if (begin == std::string_view::npos) return std::nullopt;
    text.remove_prefix(begin);
    const auto end = std::min(text.find(' '), text.size());
    const auto token = text.substr(0, end);
    if (field == 3) out.state = token.empty() ? '?' : token.front();
    if (field == 22) {
      const auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), out.start_time);
      if (ec != std::errc{} || ptr != token.data() + token.size()) return std::nullopt;
    }
    text.remove_prefix(end);
  }
  return out;
}

// Whether /proc is the proc file system of our own PID namespace. In a new
// PID namespace without its own /proc mount (unshare --pid --fork without
// --mount-proc), /proc/PID names some other process of the outer namespace.
inline bool proc_is_ours() {
#if defined(LOCKFILE_LINUX_EXTRAS)
  char target[32] = {};
  const ssize_t n = ::readlink("/proc/self", target, sizeof target - 1);
  if (n <= 0) return false;
  int pid = 0;
  const auto [end, ec] = std::from_chars(target, target + n, pid);
  return ec == std::errc{} && end == target + n && pid == static_cast<int>(::getpid());
#else
  return false;
#endif
}

inline std::optional<proc_stat> read_proc_stat(int pid) {
#if defined(LOCKFILE_LINUX_EXTRAS)
  if (!proc_is_ours()) return std::nullopt;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const auto text = read_small_file(path.c_str());
  if (text.empty()) return std::nullopt;
  return parse_proc_stat(text);
#else
  (void)pid;
  return std::nullopt;
#endif
}

// The number of live threads of a process (/proc/PID/status), 0 if unknown.
inline int thread_count(int pid) {
#if !defined(LOCKFILE_LINUX_EXTRAS)
  (void)pid;
  return 0;
#else
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  const auto text = read_small_file(path.c_str());
  const auto at = text.find("\nThreads:");
  if (at == std::string::npos) return 0;
  const auto begin = text.find_first_not_of(" \t", at + 9);
  int count = 0;
  if (begin != std::string::npos) std::from_chars(text.data() + begin, text.data() + text.size(), count);
  return count;
#endif
}

// Is the process that wrote a record with our boot id and PID namespace still
// running? Dead only on proof: /proc/PID gone (confirmed by kill), a zombie,
// or a different start time (the pid was reused). Anything unclear: alive.
inline liveness probe_process(int pid, std::uint64_t start_time) {
  if (const auto stat = read_proc_stat(pid)) {
    // A zombie leader whose other threads still run (the main thread called
    // pthread_exit) is alive: only a process with no live thread is dead.
    if (stat->state == 'X') return liveness::dead;
    if (stat->state == 'Z' && thread_count(pid) <= 1) return liveness::dead;
    if (start_time != 0 && stat->start_time != start_time) return liveness::dead;
    return liveness::alive;
  }
  // /proc has no entry, or cannot be read (hidepid, not Linux): only the
  // kernel's own "no such process" counts as proof.
  if (::kill(pid, 0) != 0 && errno == ESRCH) return liveness::dead;
  return liveness::alive;
}

inline int current_pid() { return static_cast<int>(::getpid()); }

// The count of fork()s this process descends from, as seen by the library:
// raised in the child at the fork (fork_registry below). Anything made for
// one generation (a lease, a wait channel, a mutex another thread may have
// held at the fork, the service and its threads) belongs to the parent in a
// child of a later one.
inline std::atomic<std::uint64_t>& fork_generation_counter() {
  static std::atomic<std::uint64_t> generation{0};
  return generation;
}

// The process-wide list of fork_sensitive members and the pthread_atfork
// handlers that walk it. Made on first use (a PIDLock's construction, or
// the first read of the fork generation), never destroyed: atfork handlers
// cannot be unregistered.
class fork_registry {
 public:
  static fork_registry& instance() {
    // NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): the one registry, guarded by its mutex
    static fork_registry* const registry = [] {
      auto* made = new fork_registry;  // NOLINT(cppcoreguidelines-owning-memory): never freed, see above
      ::pthread_atfork(&prepare, &in_parent, &in_child);
      return made;
    }();
    return *registry;
  }

  void add(fork_sensitive* member) {
    std::lock_guard guard(mutex_);
    members_.push_back(member);
  }
  void remove(fork_sensitive* member) noexcept {
    std::lock_guard guard(mutex_);
    std::erase(members_, member);
  }

 private:
  fork_registry() = default;

  // Held across the fork, so that the child sees the list whole. Nobody
  // holds it for more than a push_back or an erase.
  static void prepare() { instance().mutex_.lock(); }
  static void in_parent() { instance().mutex_.unlock(); }
  static void in_child() {
    auto& self = instance();
    fork_generation_counter().fetch_add(1, std::memory_order_acq_rel);
    for (auto* member : self.members_) member->forget_in_child();
    self.members_.clear();  // the parent's: the child never touches them again
    self.mutex_.unlock();
  }

  std::mutex mutex_;
  std::vector<fork_sensitive*> members_;
};

// The generation this process is in. Installs the fork handlers first: a
// generation read before they exist would stay the same across a fork, and
// a child would take its parent's identity for its own (a process that only
// ever called inspect(), then forked workers).
inline std::uint64_t fork_generation() {
  (void)fork_registry::instance();
  return fork_generation_counter().load(std::memory_order_acquire);
}

inline const process_identity& self_identity() {
  // No lock (a mutex held by another thread at fork() would stay locked in
  // the child) and no thread_local (a static PIDLock released at exit runs
  // after the main thread's thread_local objects are destroyed). One record
  // per process image, published atomically and never freed: a forked child
  // makes its own once (its pid and start time differ).
  struct host_facts {
    std::string host = host_name();
    std::string boot = boot_id();
    std::uint64_t pid_space = pid_namespace();
  };
  static const host_facts* const host = new host_facts;  // NOLINT(cppcoreguidelines-owning-memory): never freed, see above
  static std::atomic<const process_identity*> current{nullptr};
  const auto generation = fork_generation();
  const auto* identity = current.load(std::memory_order_acquire);
  while (!identity || identity->generation != generation) {
    auto* fresh = new process_identity;  // NOLINT(cppcoreguidelines-owning-memory): never freed, see above
    fresh->pid = current_pid();
    const auto stat = read_proc_stat(fresh->pid);
    fresh->start_time = stat ? stat->start_time : 0;
    fresh->host = host->host;
    fresh->boot_id = host->boot;
    fresh->pid_namespace = host->pid_space;
    fresh->generation = generation;
    fresh->earlier = identity;
    if (current.compare_exchange_strong(identity, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // NOLINT(cppcoreguidelines-owning-memory): another thread published one first
  }
  return *identity;
}

// Names the calling thread, as ps, top and gdb show it.
inline void name_this_thread([[maybe_unused]] const char* name) {
#if defined(LOCKFILE_LINUX_EXTRAS)
  ::pthread_setname_np(::pthread_self(), name);
#endif
}

// Blocks every signal in the calling thread for its lifetime; threads
// started meanwhile inherit the full mask, so the library's threads never
// take a signal the application meant for itself (a SIGTERM it reads from a
// signalfd, say).
class signals_blocked {
 public:
  signals_blocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous_);
  }
  ~signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  signals_blocked(const signals_blocked&) = delete;
  signals_blocked& operator=(const signals_blocked&) = delete;

 private:
  sigset_t previous_{};
};

// The process's one inotify instance, shared by every waiting lock (one per
// lock would exhaust fs.inotify.max_user_instances, 128 by default, and
// closing one costs an RCU grace period). Each waiter registers an interest
// in one name in one directory; whichever waiter finds the instance readable
// reads the events and wakes the interests they concern. Owned by the
// service of one fork generation; closed in a forked child at the fork.
class directory_watch final : public fork_sensitive {
 public:
  struct interest {
    std::string name;         // the lock file's name in its directory
    int wake_fd = -1;         // written when an event concerns that name
    int wd = -1;              // the directory's watch, -1 when none
    std::atomic<bool> lost{false};  // the watch ended (directory removed or moved): watch again
  };

  directory_watch() {
#if defined(LOCKFILE_LINUX_EXTRAS)
    inotify_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
#endif
    fork_registry::instance().add(this);
  }
  ~directory_watch() override { fork_registry::instance().remove(this); }
  directory_watch(const directory_watch&) = delete;
  directory_watch& operator=(const directory_watch&) = delete;
  directory_watch(directory_watch&&) = delete;
  directory_watch& operator=(directory_watch&&) = delete;

  int fd() const { return inotify_.get(); }

  // Watches dir for who; false when there is no watch (no inotify, or the
  // watch failed): the waiter then relies on its poll period.
  // NOLINTNEXTLINE(readability-convert-member-functions-to-static): static only without inotify
  bool subscribe(interest& who, const std::filesystem::path& dir) {
#if defined(LOCKFILE_LINUX_EXTRAS)
    std::lock_guard guard(mutex_);
    if (!inotify_) return false;
    drop_locked(who);
    const int wd = ::inotify_add_watch(inotify_.get(), dir.c_str(),
                                       IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                                           IN_MOVE_SELF | IN_ONLYDIR);
    if (wd < 0) return false;
    who.wd = wd;
    who.lost.store(false);
    interests_.push_back(&who);
    return true;
#else
    (void)who;
    (void)dir;
    return false;
#endif
  }

  void unsubscribe(interest& who) {
    std::lock_guard guard(mutex_);
    drop_locked(who);
  }

  // Reads the pending events and wakes every interest they concern.
  void dispatch() {
#if defined(LOCKFILE_LINUX_EXTRAS)
    std::lock_guard guard(mutex_);
    alignas(inotify_event) char buffer[4096];
    ssize_t n = 0;
    while ((n = ::read(inotify_.get(), buffer, sizeof buffer)) > 0) {
      for (char* at = buffer; at < buffer + n;) {
        // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the kernel wrote one here
        const auto* event = reinterpret_cast<const inotify_event*>(at);
        for (auto* who : interests_) {
          const bool everyone = (event->mask & IN_Q_OVERFLOW) != 0;  // events were dropped
          if (!everyone && who->wd != event->wd) continue;
          if (event->mask & IN_IGNORED) who->lost.store(true);  // the watch is gone: re-armed on the next wait
          if (everyone || (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) ||
              (event->len > 0 && who->name == event->name))
            wake(who->wake_fd);
        }
        at += sizeof(inotify_event) + event->len;
      }
    }
#endif
  }

  static void wake(int fd) {
    if (fd < 0) return;
#if defined(LOCKFILE_LINUX_EXTRAS)
    const std::uint64_t one = 1;
    // A failed write means a wake-up is pending already.
    [[maybe_unused]] const ssize_t written = ::write(fd, &one, sizeof one);
#else
    const char one = 1;
    [[maybe_unused]] const ssize_t written = ::write(fd, &one, 1);  // full pipe: one is pending
#endif
  }

  void forget_in_child() noexcept override {
    ::close(inotify_.release());
    interests_.clear();
  }

 private:
  void drop_locked(interest& who) {
    if (who.wd < 0) return;
    std::erase(interests_, &who);
#if defined(LOCKFILE_LINUX_EXTRAS)
    const bool shared = std::any_of(interests_.begin(), interests_.end(),
                                    [&](const interest* other) { return other->wd == who.wd; });
    if (!shared && inotify_) ::inotify_rm_watch(inotify_.get(), who.wd);
#endif
    who.wd = -1;
  }

  std::mutex mutex_;
  unique_fd inotify_;
  std::vector<interest*> interests_;
};

// What a waiting lock sleeps on between attempts: a change to the lock
// file's directory entry (through the process's directory_watch), the exit
// of a holder (Linux: a pidfd), or a wake-up from this process (a stop
// request, a release by another thread). Made for one fork generation: in a
// forked child it is forgotten at the fork and replaced on next use.
class wait_channel final : public fork_sensitive {
 public:
  wait_channel(const std::filesystem::path& lock_file, directory_watch& watch)
      : directory_(lock_file.parent_path()), watch_(&watch), generation_(fork_generation()) {
    interest_.name = lock_file.filename().string();
#if defined(LOCKFILE_LINUX_EXTRAS)
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
#else
    int fds[2];
#if defined(__APPLE__)
    // macOS has no pipe2: close-on-exec follows at once, and a fork and exec
    // by another thread in that moment inherits both ends.
    if (::pipe(fds) == 0) {
      for (const int fd : fds) {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        ::fcntl(fd, F_SETFL, O_NONBLOCK);
      }
#else
    // pipe2 (POSIX.1-2024; Linux, the BSDs, illumos): close-on-exec from the
    // start, so no fork and exec by another thread can inherit it.
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
#endif
      wake_read_.reset(fds[0]);
      wake_.reset(fds[1]);
    }
#endif
    interest_.wake_fd = wake_.get();
    fork_registry::instance().add(this);
  }
  ~wait_channel() override {
    fork_registry::instance().remove(this);
    if (generation_ == fork_generation()) watch_->unsubscribe(interest_);  // else the parent's watch: untouched
  }
  wait_channel(const wait_channel&) = delete;
  wait_channel& operator=(const wait_channel&) = delete;
  wait_channel(wait_channel&&) = delete;
  wait_channel& operator=(wait_channel&&) = delete;

  // Made before a fork this process descends from: the parent's.
  bool forgotten() const { return generation_ != fork_generation(); }

  // Watches the lock file's directory, again after the watch ended (the
  // directory was removed or renamed). Without a watch, waiting falls back
  // to its poll period. (A new holder's link raises no wake-up: waiters wake
  // to free names.)
  void watch() {
    std::lock_guard guard(watch_mutex_);  // two threads may wait on one lock
    if (interest_.wd >= 0 && !interest_.lost.load()) return;
    watching_.store(watch_->subscribe(interest_, directory_));
  }

  // Wakes a thread sleeping in wait_until (safe from any thread).
  void notify() { directory_watch::wake(wake_.get()); }

  // A waiting call begins and ends: nothing to do here (the watch is the
  // process's inotify instance; Windows closes its directory handle).
  void enter() {}
  void leave() {}

  // Forgets wake-ups seen so far: whatever they announced, the next attempt
  // sees for itself. (Call before checking for a stop request, so that a
  // request made after the check is not forgotten with them.)
  // True when there was one.
  bool drain() {
    char buffer[64];
    bool woken = false;
    const int wake_read = wake_read_ ? wake_read_.get() : wake_.get();
    if (wake_read >= 0)
      while (::read(wake_read, buffer, sizeof buffer) > 0) woken = true;
    return woken;
  }

  // Sleeps until the deadline, a wake-up, a directory event naming the lock
  // file, or (when holder_fd >= 0) the holder's exit.
  void wait_until(steady_clock_time deadline, int holder_fd) {
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      const int timeout = static_cast<int>(std::min<long long>(left, INT_MAX));
      pollfd fds[3];
      nfds_t count = 0;
      const int wake_read = wake_read_ ? wake_read_.get() : wake_.get();
      if (wake_read >= 0) fds[count++] = {wake_read, POLLIN, 0};
      const int events = watching_.load() ? watch_->fd() : -1;
      if (events >= 0) fds[count++] = {events, POLLIN, 0};
      if (holder_fd >= 0) fds[count++] = {holder_fd, POLLIN, 0};
      const int ready = ::poll(fds, count, timeout);
      if (ready < 0 && errno != EINTR) return;
      if (ready <= 0) continue;
      for (nfds_t i = 0; i < count; ++i) {
        if (fds[i].revents == 0) continue;
        if (fds[i].fd != events) return;  // woken, or the holder exited
        watch_->dispatch();  // wakes us through wake_ when an event names our file
      }
    }
  }

  // For a wait_descriptor's set: what wait_until polls (-1 for none), and
  // the reading of directory events it does when they are ready.
  int wake_read_fd() const { return wake_read_ ? wake_read_.get() : wake_.get(); }
  int events_fd() const { return watch_->fd(); }
  void dispatch_events() { watch_->dispatch(); }

  void forget_in_child() noexcept override {
    ::close(wake_.release());
    ::close(wake_read_.release());
    watching_.store(false);
  }

 private:
  const std::filesystem::path directory_;
  directory_watch* const watch_;
  const std::uint64_t generation_;
  directory_watch::interest interest_;
  unique_fd wake_;       // eventfd (Linux) or the write end of a pipe
  unique_fd wake_read_;  // the read end of that pipe (not Linux)
  std::mutex watch_mutex_;
  std::atomic<bool> watching_{false};
};

// A wait an event loop owns (lockfile::lock_waiter): one descriptor that
// becomes readable when the channel would wake a sleeping waiter (a
// directory event, a wake-up, the holder's exit) or at the planned time.
// Linux: an epoll set of the channel's descriptors, the holder's pidfd and
// a timerfd. Elsewhere (no epoll, no timerfd) there is none: fd() is -1,
// and the caller's own timer at the planned time is the fallback.
class wait_descriptor final : public fork_sensitive {
 public:
  wait_descriptor(const std::filesystem::path& lock_file, directory_watch& watch)
      : channel_(lock_file, watch), generation_(fork_generation()) {
#if defined(LOCKFILE_LINUX_EXTRAS)
    unique_fd set(::epoll_create1(EPOLL_CLOEXEC));
    unique_fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (set && timer && add(set.get(), timer.get()) && add(set.get(), channel_.wake_read_fd())) {
      epoll_ = std::move(set);
      timer_ = std::move(timer);
    }
#endif
    fork_registry::instance().add(this);
  }
  ~wait_descriptor() override { fork_registry::instance().remove(this); }
  wait_descriptor(const wait_descriptor&) = delete;
  wait_descriptor& operator=(const wait_descriptor&) = delete;
  wait_descriptor(wait_descriptor&&) = delete;
  wait_descriptor& operator=(wait_descriptor&&) = delete;

  int fd() const { return epoll_.get(); }

  // Made before a fork this process descends from: closed at the fork.
  bool forgotten() const { return generation_ != fork_generation(); }

  // Before an attempt: reads the directory events (waking the channels
  // they concern, ours among them), watches the directory again if that
  // watch ended, and reads the wake-ups and the timer's expiry, so that the
  // set sleeps again. True when an attempt is worth making: the first time,
  // on a wake-up for our name, the planned time, the holder's exit, or
  // where there is no descriptor (the caller's timer woke us). False after
  // an event that concerned another name or directory only.
  bool prepare() {
    if (!epoll_) {
      channel_.watch();
      channel_.drain();
      return true;
    }
#if defined(LOCKFILE_LINUX_EXTRAS)
    channel_.dispatch_events();
    channel_.watch();
    const int events = channel_.events_fd();
    if (events >= 0 && events != events_added_ && add(epoll_.get(), events)) events_added_ = events;
    bool due = !armed_;
    std::uint64_t expirations = 0;
    if (::read(timer_.get(), &expirations, sizeof expirations) == sizeof expirations) due = true;
    if (channel_.drain()) due = true;
    if (holder_) {
      pollfd exited{holder_.get(), POLLIN, 0};
      if (::poll(&exited, 1, 0) > 0) due = true;
    }
    return due;
#else
    return true;
#endif
  }

  // After an attempt that did not acquire: readable at `at` (steady time),
  // at the holder's exit, or at an event of the channel.
  // NOLINTNEXTLINE(readability-convert-member-functions-to-static): static only without the Linux extras
  void arm(steady_clock_time at, unique_fd holder_exit) {
#if defined(LOCKFILE_LINUX_EXTRAS)
    if (!epoll_) return;
    drop_holder();
    if (holder_exit && add(epoll_.get(), holder_exit.get())) holder_ = std::move(holder_exit);
    // steady_clock is CLOCK_MONOTONIC on Linux (glibc and musl, libstdc++
    // and libc++), so the plan's time point is the timer's. A time already
    // past fires at once.
    const auto since_epoch = std::max(at.time_since_epoch(), std::chrono::steady_clock::duration(1));
    itimerspec when{};
    when.it_value.tv_sec = static_cast<time_t>(std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count());
    when.it_value.tv_nsec = static_cast<long>((since_epoch % std::chrono::seconds(1)) / std::chrono::nanoseconds(1));
    ::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &when, nullptr);
    armed_ = true;
#else
    (void)at;
    (void)holder_exit;
#endif
  }

  // Acquired: nothing more to wait for (the directory's events still make
  // the descriptor readable; a caller that is done stops watching it).
  // NOLINTNEXTLINE(readability-convert-member-functions-to-static): static only without the Linux extras
  void disarm() {
#if defined(LOCKFILE_LINUX_EXTRAS)
    drop_holder();
    if (timer_) {
      const itimerspec never{};
      ::timerfd_settime(timer_.get(), 0, &never, nullptr);
    }
    armed_ = false;
#endif
  }

  void forget_in_child() noexcept override {
    ::close(epoll_.release());
    ::close(timer_.release());
    ::close(holder_.release());
    events_added_ = -1;
  }

 private:
#if defined(LOCKFILE_LINUX_EXTRAS)
  static bool add(int set, int fd) {
    if (fd < 0) return false;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    return ::epoll_ctl(set, EPOLL_CTL_ADD, fd, &event) == 0 || errno == EEXIST;
  }

  // Out of the set before it is closed: a child forked meanwhile keeps a
  // copy of the pidfd, and the set would keep it while any copy is open.
  void drop_holder() {
    if (!holder_) return;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, holder_.get(), nullptr);
    holder_.reset();
  }
#endif

  wait_channel channel_;
  const std::uint64_t generation_;
  unique_fd epoll_;
  unique_fd timer_;
  unique_fd holder_;
  int events_added_ = -1;  // the directory watch's descriptor, once it is in the set
  [[maybe_unused]] bool armed_ = false;  // a plan is set: the next attempt waits for a reason (Linux)
};

// Creates an empty file under a new name (EEXIST when the name exists) and
// makes it durable: its inode written out, then its directory entry, so
// that the name survives a crash of this machine (fencing generations).
inline std::error_code create_durable_name(const std::filesystem::path& path, mode_t mode) {
  const unique_fd created(open_file(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode));
  if (!created) return errno_code();
  if (::fsync(created.get()) != 0) return errno_code();
  const unique_fd dir(open_file(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY, 0, last_component::follow));
  if (!dir) return errno_code();
  // EINVAL: a file system that cannot sync a directory (some FUSE ones);
  // the name is as durable there as the file system makes it.
  if (::fsync(dir.get()) != 0 && errno != EINVAL) return errno_code();
  return {};
}

// A descriptor that becomes readable when the process with this pid exits
// (Linux pidfd), checked against its start time after opening so that a
// reused pid is not mistaken for the holder. -1 when unavailable, or when
// the pid no longer names the holder (the next attempt will see it dead).
inline unique_fd open_holder_exit_fd(int pid, std::uint64_t start_time) {
#if defined(LOCKFILE_LINUX_EXTRAS) && defined(SYS_pidfd_open)
  unique_fd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));  // always close-on-exec
  if (!fd) return fd;
  const auto stat = read_proc_stat(pid);
  if (!stat || (start_time != 0 && stat->start_time != start_time)) return unique_fd{};
  // Already readable: it has exited (an unreaped zombie that an override
  // still calls alive). Waiting on it would return at once, every time.
  pollfd exited{fd.get(), POLLIN, 0};
  if (::poll(&exited, 1, 0) > 0) return unique_fd{};
  return fd;
#else
  (void)pid;
  (void)start_time;
  return unique_fd{};
#endif
}

}  // namespace lockfile::detail

#undef LOCKFILE_LINUX_EXTRAS  // the rest of the header asks linux_extras, if anything

#endif  // LOCKFILE_DETAIL_PLATFORM_POSIX_HPP
