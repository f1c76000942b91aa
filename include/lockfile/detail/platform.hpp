// Platform interface: what the rest of the library asks of the operating
// system, the types it is asked in, and what is built on top the same way on
// every OS. Each OS file (platform_posix.hpp, platform_windows.hpp) provides
// the primitives below; nothing outside the platform files calls the OS.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_PLATFORM_HPP
#define LOCKFILE_DETAIL_PLATFORM_HPP

// The primitives each OS file provides, in namespace lockfile::detail (their
// comments there say what each guarantees):
//
//   native_handle, no_handle, unique_fd   an open file or process, owned
//   publication, observed_file            basic_publication/basic_observed_file of unique_fd
//   errno_code(int)                       a library-made code (ELOOP, EISDIR, ...)
//   mode_bits, to_mode(perms)             creation mode bits (ignored on Windows)
//   stat_fd, stat_fd_fresh, stat_path     file_facts of a handle or a name (never following a link)
//   read_prefix, write_at, truncate_to    positioned I/O on a handle
//   try_flock, unlock_flock               the removal guard: flock, or LockFileEx on one high byte
//   remove_name, move_name, put_back      unlink, rename aside, give the name back
//   names_starting_with                   a directory listing by prefix
//   make_directories                      mkdir -p
//   removal_refused_hint                  why a removal was refused, for an error message
//   removal_in_use, removal_in_use_hint   a removal refused for now (Windows: a program has the file open)
//   decide_fs_path, vanished_as_enoent    local or network removal path; "vanished" errors
//   publish_new_file                      a complete record under a new name, or EEXIST
//   observe_file                          open someone's lock file, check its type, read it
//   probe_process, current_pid            is a same-machine owner alive
//   self_identity, fork_generation,       who we are, and what belongs to a fork parent
//     fork_registry
//   name_this_thread, signals_blocked     manners for the library's own threads
//   directory_watch, wait_channel,        what a waiting lock sleeps on
//     open_holder_exit_fd
//   linux_extras                          whether the Linux fast paths are compiled in

namespace lockfile::detail {

using steady_clock_time = std::chrono::steady_clock::time_point;

// Which file a name or a handle is: (device, inode) on POSIX, (volume
// serial number, file index) on Windows.
struct file_identity {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::uint64_t inode_high = 0;  // the upper half of a 128-bit file id (Windows ReFS); 0 elsewhere
  friend bool operator==(const file_identity&, const file_identity&) = default;
};

struct file_facts {
  file_identity identity;
  bool regular = false;
  bool directory = false;
  bool symlink = false;
  std::uint64_t links = 0;
  std::uint32_t owner = 0;  // uid on POSIX; 0 on Windows (ACLs, not an owner, decide)
  std::chrono::system_clock::time_point modified;  // mtime: any writer can set it
  std::chrono::system_clock::time_point changed;   // ctime: the kernel's (or server's) clock alone
};

// A file time as a time_point, saturating: an mtime set past the year 2262
// (or before 1678) does not overflow the nanosecond count.
inline std::chrono::system_clock::time_point from_file_time(std::int64_t seconds, std::int64_t nanoseconds) {
  constexpr std::int64_t limit = std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1;
  if (seconds > limit) return from_unix_nanos(std::numeric_limits<std::int64_t>::max());
  if (seconds < -limit) return from_unix_nanos(std::numeric_limits<std::int64_t>::min());
  return from_unix_nanos(seconds * 1'000'000'000 + nanoseconds);
}

enum class flock_result { locked, busy, unsupported, failed };

// Which removal path a directory's file system takes (DESIGN.md "Protocol",
// step 4). On the file systems known to be local, one kernel sees every
// flock and answers stat from the inode itself. Everything else (NFS,
// SMB/CIFS, FUSE, 9p, Ceph, GFS2, OCFS2, Lustre, GPFS, and any type not
// listed here) is treated as a network file system.
enum class fs_path { local, network };

struct fs_path_decision {
  fs_path path = fs_path::network;
  bool final = false;  // decided on dir itself, not on an ancestor
};

// The protocol's own names beside a lock file, ".<name>.<middle><suffix>":
// private publication files (".tmp"), claims (".claim", ".claim.1", ...) and
// files moved aside (".reclaim"). Readers ignore them.
// (Appended piecewise: GCC 12 warns falsely on "." + std::string at -O2.)
inline std::filesystem::path protocol_name(const std::filesystem::path& lock_file, std::string_view middle,
                                           std::string_view suffix) {
  // In the path's own character type (wide on Windows); middle and suffix
  // are ASCII (an owner id, a level number).
  std::filesystem::path::string_type leaf(1, '.');
  leaf.append(lock_file.filename().native()).append(1, '.');
  leaf.append(middle.begin(), middle.end()).append(suffix.begin(), suffix.end());
  return lock_file.parent_path() / leaf;
}

enum class liveness { alive, dead };

// The identity this process writes into its records. Host, boot id and PID
// namespace are read once per process; pid and start time again after fork().
struct process_identity {
  int pid = 0;
  std::uint64_t start_time = 0;
  std::string host;
  std::string boot_id;
  std::uint64_t pid_namespace = 0;
  std::uint64_t generation = 0;                // the fork generation it was made for
  const process_identity* earlier = nullptr;  // the parent's, kept reachable (never freed)
};

// What must be forgotten in a forked child before its own code runs: a
// lease's descriptor (the parent's lease, never the child's), a waiting
// channel's wake-up descriptor. Closing them later by number could close a
// file the child opened itself under a recycled number.
class fork_sensitive {
 public:
  // Called in the child, at the fork, with every other thread gone: closes
  // the member's descriptors and marks it as the parent's.
  virtual void forget_in_child() noexcept = 0;

  fork_sensitive() = default;
  virtual ~fork_sensitive() = default;
  fork_sensitive(const fork_sensitive&) = delete;
  fork_sensitive& operator=(const fork_sensitive&) = delete;
  fork_sensitive(fork_sensitive&&) = delete;
  fork_sensitive& operator=(fork_sensitive&&) = delete;
};

// The result of trying to create the lock file with a complete record.
template <class Handle>
struct basic_publication {
  Handle fd;           // the lock file, open read-write, when published
  std::error_code error;  // EEXIST when someone else's file is in the way
  const char* operation = "create lock file";
  std::filesystem::path subject;  // the directory, when creating it failed
};

// A look at someone else's lock file: its descriptor, identity and bytes.
template <class Handle>
struct basic_observed_file {
  Handle fd;
  file_facts facts;
  std::string bytes;       // at most max_record_bytes + 1
  std::error_code error;   // ENOENT: it vanished, which callers retry
  const char* operation = "read lock file";
};

}  // namespace lockfile::detail

#if defined(_WIN32)
#include "platform_windows.hpp"
#else
#include "platform_posix.hpp"
#endif

namespace lockfile::detail {

// Built on the primitives, the same on every OS.

// flock on a judged file, dropped explicitly on the way out, not left to
// close(): a fork() by another thread meanwhile would share the descriptor,
// and the child would hold the flock for its whole life. no_handle: no flock.
struct flock_filter {
  native_handle fd = no_handle;
  flock_result result = flock_result::unsupported;
  std::error_code error;
  explicit flock_filter(native_handle handle) : fd(handle) {
    if (fd != no_handle) result = try_flock(fd, error);
  }
  flock_filter(const flock_filter&) = delete;
  flock_filter& operator=(const flock_filter&) = delete;
  ~flock_filter() { unlock(); }
  void unlock() {
    if (result == flock_result::locked) unlock_flock(fd);
    result = flock_result::unsupported;
  }
};

// Publishes, creating missing parent directories only when the first try
// says they are missing (the common case costs no mkdir).
inline publication publish(const std::filesystem::path& path, std::string_view bytes,
                           mode_bits file_mode, mode_bits directory_mode,
                           std::string_view owner) {
  auto result = publish_new_file(path, bytes, file_mode, path, owner);
  if (result.error != std::errc::no_such_file_or_directory) return result;
  if (auto ec = make_directories(path.parent_path(), directory_mode)) {
    result.error = ec;
    result.operation = "create lock directory";
    result.subject = path.parent_path();
    return result;
  }
  return publish_new_file(path, bytes, file_mode, path, owner);
}

// For inspection: a file that was opened and then vanished (ENOENT or
// ESTALE from statx or read; on a network file system possibly for a
// moment only) is looked at again, a few times, before it is called gone.
inline observed_file observe_settled(const std::filesystem::path& path, fs_path kind) {
  auto seen = observe_file(path, kind);
  for (int again = 0; again < 8 && seen.error == std::errc::no_such_file_or_directory && seen.fd; ++again)
    seen = observe_file(path, kind);
  return seen;
}

// A mutex that a forked child can use even when another thread of the
// parent held it at the fork: in a child of a later fork generation, lock()
// starts on a fresh mutex and leaks the old one, which may stay locked
// forever. (The library never forks while holding one of these.)
class fork_safe_mutex {
 public:
  fork_safe_mutex() : node_(new node{fork_generation(), {}}) {}
  ~fork_safe_mutex() { delete node_.load(std::memory_order_relaxed); }  // NOLINT(cppcoreguidelines-owning-memory)
  fork_safe_mutex(const fork_safe_mutex&) = delete;
  fork_safe_mutex& operator=(const fork_safe_mutex&) = delete;

  void lock() { current().lock(); }
  void unlock() { current().unlock(); }
  bool try_lock() { return current().try_lock(); }

 private:
  struct node {
    std::uint64_t generation;
    std::mutex mutex;
  };
  std::mutex& current() {
    const auto generation = fork_generation();
    node* at = node_.load(std::memory_order_acquire);
    while (at->generation != generation) {
      auto* fresh = new node{generation, {}};  // NOLINT(cppcoreguidelines-owning-memory): owned by node_
      if (node_.compare_exchange_strong(at, fresh, std::memory_order_acq_rel)) return fresh->mutex;
      delete fresh;  // NOLINT(cppcoreguidelines-owning-memory): another thread of the child won
    }
    return at->mutex;
  }
  std::atomic<node*> node_;
};

// Unique across processes, hosts and calls: pid, wall time, a counter and
// 64 random bits.
//
// The random bits come from a generator seeded from std::random_device
// (which may cost a system call or a slow instruction per use) once per
// thread, and again in a forked child, which would otherwise repeat its
// parent's bits.
inline std::string new_owner_id(int pid, std::chrono::system_clock::time_point now) {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 bits;  // NOLINT(cert-msc32-c,cert-msc51-cpp): seeded below before any use
  thread_local int seeded_for = 0;
  if (seeded_for != pid) {
    std::random_device entropy;
    std::seed_seq seed{entropy(), entropy(), entropy(), entropy()};
    bits.seed(seed);
    seeded_for = pid;
  }
  const std::uint64_t random = bits();
  char hex[17] = {};
  std::to_chars(hex, hex + 16, random, 16);
  return std::to_string(pid) + "-" + std::to_string(unix_nanos(now)) + "-" +
         std::to_string(++counter) + "-" + hex;
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_PLATFORM_HPP
