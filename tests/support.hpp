// Shared by the tests: temporary directories, files with chosen bytes and
// times, child processes, and waiting on conditions with a deadline (never a
// fixed sleep as synchronization).
#pragma once

#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace lockfile_test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Whether the library was built with its Linux extras (inotify, pidfd,
// O_TMPFILE, statx, the /proc dead-owner probe, statfs file-system kinds,
// thread names); false in the portable lane (preset "portable",
// -DLOCKFILE_PORTABLE_POSIX), which runs the code macOS and the BSDs use.
// A test of an extra asserts the portable behaviour there, or skips with a
// reason that starts "portable POSIX path:".
inline constexpr bool linux_extras = lockfile::detail::linux_extras;

// A fresh directory per test, removed with everything in it afterwards.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "lockfile-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path_, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

  // Names in the directory (not recursive).
  std::set<std::string> entries() const {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) names.insert(entry.path().filename().string());
    return names;
  }

 private:
  fs::path path_;
};

inline void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Sets a file's modification time (instead of sleeping until it is old).
inline void set_mtime(const fs::path& path, std::chrono::system_clock::time_point when) {
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  // Both times: bindfs (libfuse) drops the mtime when atime is UTIME_OMIT.
  struct timespec times[2];
  times[1].tv_sec = static_cast<time_t>(nanos / 1'000'000'000);
  times[1].tv_nsec = static_cast<long>(nanos % 1'000'000'000);
  times[0] = times[1];
  if (::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    throw std::runtime_error("utimensat failed on " + path.string());
}

// A valid record from a foreign owner (no identity fields, like the Go
// package writes), so the dead-owner fast path never applies to it.
inline std::string foreign_record(std::chrono::system_clock::time_point heartbeat, int pid = 999999,
                                  const std::string& owner = "foreign-owner") {
  lockfile::Lease lease;
  lease.owner_id = owner;
  lease.pid = pid;
  lease.heartbeat = heartbeat;
  return lockfile::format_lease(lease);
}

// This machine's boot id and this process's PID namespace, as the library
// writes them into its records (for same-machine records in tests).
inline std::string our_boot_id() {
  auto text = read_file("/proc/sys/kernel/random/boot_id");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

inline std::uint64_t our_pid_namespace() {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

// Polls cond until it holds or the deadline passes; true when it held.
inline bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A one-way pipe used to signal between processes.
struct pipe_pair {
  int read_end = -1;
  int write_end = -1;
  pipe_pair() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    read_end = fds[0];
    write_end = fds[1];
  }
  ~pipe_pair() {
    close_read();
    close_write();
  }
  pipe_pair(const pipe_pair&) = delete;
  pipe_pair& operator=(const pipe_pair&) = delete;
  void close_read() {
    if (read_end >= 0) ::close(read_end);
    read_end = -1;
  }
  void close_write() {
    if (write_end >= 0) ::close(write_end);
    write_end = -1;
  }
  void send(char c) const { (void)!::write(write_end, &c, 1); }
  // Reads one byte; '\0' at end of file.
  char receive() const {
    char c = 0;
    ssize_t n;
    do n = ::read(read_end, &c, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 ? c : '\0';
  }
};

// Runs body in a forked child and exits with its return value. The child
// never returns into Catch2.
inline pid_t fork_child(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 100;
    try {
      code = body();
    } catch (...) {
      code = 101;
    }
    ::_exit(code);
  }
  return pid;
}

// Waits for a child; its exit code, or 128 + signal.
inline int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// A program run with its stdin, and its stdout and stderr (as one), on
// pipes; killed if still running when it goes out of scope.
class program_process {
 public:
  explicit program_process(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(input_.read_end, 0);
      ::dup2(output_.write_end, 1);
      ::dup2(output_.write_end, 2);
      ::execv(argv[0], argv.data());
      ::_exit(125);
    }
    input_.close_read();
    output_.close_write();
  }
  ~program_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)wait_exit(pid_);
    }
  }
  program_process(const program_process&) = delete;
  program_process& operator=(const program_process&) = delete;

  pid_t pid() const { return pid_; }

  // The next line it printed (without the newline), waiting at most
  // `limit`; what there was by then otherwise.
  std::string line(std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::string text;
    for (;;) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      pollfd ready{output_.read_end, POLLIN, 0};
      if (left <= 0 || ::poll(&ready, 1, static_cast<int>(left)) <= 0) return text;
      char c = 0;
      if (::read(output_.read_end, &c, 1) != 1 || c == '\n') return text;
      text += c;
    }
  }

  // Writes text to its stdin, closes it, and waits for it: its exit status;
  // `rest` gets what it printed after the lines read so far.
  int finish(const std::string& text, std::string& rest) {
    (void)!::write(input_.write_end, text.data(), text.size());
    input_.close_write();
    for (char c = output_.receive(); c != '\0'; c = output_.receive()) rest += c;
    const int status = wait_exit(pid_);
    pid_ = -1;
    return status;
  }

 private:
  pipe_pair input_;
  pipe_pair output_;
  pid_t pid_ = -1;
};

// A child process that holds a lock until told to release it (or killed).
class holder_process {
 public:
  holder_process(const fs::path& lock_file, lockfile::Options options = {}) {
    pid_ = fork_child([&]() -> int {
      ready_.close_read();
      release_.close_write();
      lockfile::PIDLock lock(lock_file, options);
      std::error_code ec;
      lock.acquire(ec);
      if (ec) {
        ready_.send('F');
        return 2;
      }
      ready_.send('H');
      (void)release_.receive();  // until the parent closes its end
      lock.release(ec);
      return ec ? 3 : 0;
    });
    ready_.close_write();
    release_.close_read();
    acquired_ = ready_.receive() == 'H';
  }
  ~holder_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
    }
  }
  holder_process(const holder_process&) = delete;
  holder_process& operator=(const holder_process&) = delete;

  bool acquired() const { return acquired_; }
  pid_t pid() const { return pid_; }
  // Asks the child to release and exit; its exit code.
  int finish() {
    release_.close_write();
    const int code = wait_exit(pid_);
    pid_ = -1;
    return code;
  }
  void signal(int sig) const { ::kill(pid_, sig); }

 private:
  pipe_pair ready_;
  pipe_pair release_;
  pid_t pid_ = -1;
  bool acquired_ = false;
};

}  // namespace lockfile_test
