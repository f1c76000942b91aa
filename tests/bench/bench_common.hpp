// Helpers shared by the benchmark programs: one clock for all processes,
// state in MAP_SHARED memory, summaries, option parsing, a scratch
// directory, the file system's name, and failing loudly.
#pragma once

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace bench {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;  // CLOCK_MONOTONIC: one clock for all processes

// The benchmark's own process, as opposed to the children it forks.
inline const pid_t main_process = ::getpid();

// Prints "bench: <message>" (and strerror(errno) when with_errno) and exits
// 1: through exit() in the main process (cleaning up its scratch
// directory), through _exit() in a forked child (which must not run the
// parent's exit handlers).
[[noreturn]] inline void vfail(bool with_errno, const char* format, va_list args) {
  const int saved = errno;
  std::fflush(stdout);
  std::fputs("bench: ", stderr);
  std::vfprintf(stderr, format, args);
  if (with_errno) std::fprintf(stderr, ": %s", std::strerror(saved));
  std::fputc('\n', stderr);
  if (::getpid() != main_process) ::_exit(1);
  std::exit(1);
}

[[noreturn, gnu::format(printf, 1, 2)]] inline void fail(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vfail(false, format, args);
}

// For a failed system call: appends strerror(errno).
[[noreturn, gnu::format(printf, 1, 2)]] inline void fail_errno(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vfail(true, format, args);
}

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

// A T in memory shared with every process forked afterwards.
template <class T>
T* make_shared_state() {
  void* memory = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) fail_errno("mmap shared state");
  return new (memory) T{};
}

template <class T>
void free_shared_state(T* state) {
  state->~T();
  ::munmap(state, sizeof(T));
}

// Waits (yielding the CPU) until done() is true; a benchmark that hangs
// says what it was waiting for instead.
template <class Predicate>
void await(const char* what, Predicate&& done, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto give_up = clock_type::now() + limit;
  while (!done()) {
    if (clock_type::now() > give_up) fail("timed out after %llds waiting for %s", static_cast<long long>(limit.count()), what);
    std::this_thread::yield();
  }
}

// fork(), failing loudly. The child dies with its parent (PR_SET_PDEATHSIG),
// so that a benchmark that fails, or is interrupted, leaves no holder
// sleeping forever behind it.
inline pid_t fork_or_fail() {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail_errno("prctl(PR_SET_PDEATHSIG)");
    // The parent died before prctl took effect? (pid 1 of a new PID
    // namespace sees its parent, outside, as 0.)
    const pid_t now_parent = ::getppid();
    if (now_parent != parent && now_parent != 0) ::_exit(1);
  }
  return pid;
}

// Reaps a child; fails unless it exited with status 0.
inline void reap_ok(pid_t pid, const char* who) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) fail_errno("waitpid %s", who);
  if (WIFSIGNALED(status)) fail("%s (pid %d) died of signal %d", who, static_cast<int>(pid), WTERMSIG(status));
  if (WEXITSTATUS(status) != 0) fail("%s (pid %d) exited with status %d", who, static_cast<int>(pid), WEXITSTATUS(status));
}

struct summary {
  std::size_t count = 0;
  double median = 0, p99 = 0, min = 0, max = 0;
};

// Nearest-rank quantiles, as bench_waiting computes them.
inline summary summarize(std::vector<double> samples) {
  if (samples.empty()) fail("no samples to summarize");
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double q) { return samples[static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1))]; };
  return {samples.size(), at(0.5), at(0.99), samples.front(), samples.back()};
}

// Command line: "--name value" pairs and bare "--flag"s, checked against
// what the program asks for; anything unknown or malformed is an error.
class arguments {
 public:
  arguments(int argc, char** argv, std::string usage) : usage_(std::move(usage)) {
    for (int i = 1; i < argc; ++i) {
      std::string_view word = argv[i];
      if (word == "-h" || word == "--help") {
        std::printf("usage: %s\n", usage_.c_str());
        std::exit(0);
      }
      if (word.substr(0, 2) != "--") fail("unexpected argument '%s'\nusage: %s", argv[i], usage_.c_str());
      const bool has_value = i + 1 < argc && std::string_view(argv[i + 1]).substr(0, 2) != "--";
      items_.push_back({std::string(word.substr(2)), has_value ? argv[++i] : "", has_value, false});
    }
  }

  bool flag(std::string_view name) {
    auto* found = find(name);
    if (found && found->has_value) fail("--%s takes no value\nusage: %s", found->name.c_str(), usage_.c_str());
    return found != nullptr;
  }
  std::string text(std::string_view name, std::string fallback) {
    auto* found = find_with_value(name);
    return found ? found->value : fallback;
  }
  long long integer(std::string_view name, long long fallback, long long min = 0) {
    auto* found = find_with_value(name);
    if (!found) return fallback;
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(found->value.c_str(), &end, 10);
    if (errno != 0 || end == found->value.c_str() || *end != '\0' || value < min)
      fail("--%s wants an integer >= %lld, got '%s'", found->name.c_str(), min, found->value.c_str());
    return value;
  }
  double number(std::string_view name, double fallback) {
    auto* found = find_with_value(name);
    if (!found) return fallback;
    char* end = nullptr;
    const double value = std::strtod(found->value.c_str(), &end);
    if (end == found->value.c_str() || *end != '\0' || !(value > 0))
      fail("--%s wants a positive number, got '%s'", found->name.c_str(), found->value.c_str());
    return value;
  }
  // Comma-separated positive integers ("2,4,8").
  std::vector<int> integers(std::string_view name, std::vector<int> fallback) {
    auto* found = find_with_value(name);
    if (!found) return fallback;
    std::vector<int> out;
    const char* at = found->value.c_str();
    for (;;) {
      char* end = nullptr;
      const long value = std::strtol(at, &end, 10);
      if (end == at || value < 1 || value > 1000 || (*end != ',' && *end != '\0'))
        fail("--%s wants a list like 2,4,8, got '%s'", found->name.c_str(), found->value.c_str());
      out.push_back(static_cast<int>(value));
      if (*end == '\0') return out;
      at = end + 1;
    }
  }
  // Call after every lookup: rejects options nobody asked for.
  void reject_unknown() const {
    for (const auto& item : items_)
      if (!item.used) fail("unknown option --%s\nusage: %s", item.name.c_str(), usage_.c_str());
  }

 private:
  struct item {
    std::string name, value;
    bool has_value, used;
  };
  item* find(std::string_view name) {
    item* found = nullptr;
    for (auto& it : items_)
      if (it.name == name) {
        it.used = true;
        found = &it;
      }
    return found;
  }
  item* find_with_value(std::string_view name) {
    auto* found = find(name);
    if (found && !found->has_value) fail("--%s needs a value\nusage: %s", found->name.c_str(), usage_.c_str());
    return found;
  }
  std::string usage_;
  std::vector<item> items_;
};

// A fresh directory (mkdtemp) under parent, removed with everything in it
// when the main process is done with it: at the end of its scope, or at
// exit() when fail() ends the program (exit() unwinds no scopes).
class scratch_directory {
 public:
  explicit scratch_directory(const fs::path& parent, const char* prefix = "lockfile-bench-") {
    if (::getpid() != main_process) fail("scratch_directory: made in the main process only");
    std::string pattern = (parent / (std::string(prefix) + "XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) fail_errno("mkdtemp %s", pattern.c_str());
    path_ = pattern;
    live();  // constructed before the handler is registered, so destroyed after it ran
    static const bool registered = std::atexit(remove_at_exit) == 0;
    if (!registered) fail("atexit failed");
    live().push_back(path_);
  }
  ~scratch_directory() {
    if (::getpid() != main_process) return;  // a forked child leaves it to its parent
    remove(path_);
    std::erase(live(), path_);
  }
  scratch_directory(const scratch_directory&) = delete;
  scratch_directory& operator=(const scratch_directory&) = delete;
  const fs::path& path() const { return path_; }

 private:
  static std::vector<fs::path>& live() {
    static std::vector<fs::path> paths;
    return paths;
  }
  static void remove(const fs::path& path) {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  static void remove_at_exit() {
    if (::getpid() != main_process) return;
    for (const auto& path : live()) remove(path);
  }
  fs::path path_;
};

// The name of the file system holding path, from statfs(2)'s f_type.
inline std::string file_system_name(const fs::path& path) {
  struct statfs info {};
  if (::statfs(path.c_str(), &info) != 0) fail_errno("statfs %s", path.c_str());
  struct known {
    unsigned long magic;
    const char* name;
  };
  static constexpr known names[] = {
      {0xEF53, "ext2/3/4"},        {0x01021994, "tmpfs"},   {0x58465342, "xfs"},
      {0x9123683E, "btrfs"},       {0x794C7630, "overlayfs"}, {0xF2F52010, "f2fs"},
      {0x2FC12FC1, "zfs"},         {0xCA451A4E, "bcachefs"}, {0x6969, "nfs"},
      {0xFF534D42, "cifs"},        {0xFE534D42, "smb2"},    {0x65735546, "fuse"},
      {0x01021997, "9p"},          {0x00C36400, "ceph"},    {0x858458F6, "ramfs"},
  };
  const auto type = static_cast<unsigned long>(info.f_type);
  for (const auto& entry : names)
    if (entry.magic == type) return entry.name;
  char hex[32];
  std::snprintf(hex, sizeof hex, "unknown (f_type 0x%lx)", type);
  return hex;
}

// Samples from a child to its parent through a pipe: a count, then doubles.
inline void write_all(int fd, const void* data, std::size_t size) {
  const auto* at = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, at, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_errno("write to pipe");
    at += n;
    size -= static_cast<std::size_t>(n);
  }
}

inline void read_all(int fd, void* data, std::size_t size) {
  auto* at = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, at, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("read from pipe");
    if (n == 0) fail("pipe closed early (the child failed?)");
    at += n;
    size -= static_cast<std::size_t>(n);
  }
}

// "| 12.3 µs |"-style cells: microseconds with one decimal.
inline std::string micros(double us) {
  char text[32];
  if (us >= 10000) std::snprintf(text, sizeof text, "%.1f ms", us / 1000.0);
  else std::snprintf(text, sizeof text, "%.1f µs", us);
  return text;
}

inline std::string ratio(double value, double floor) {
  if (!(floor > 0)) return "n/a";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f×", value / floor);
  return text;
}

}  // namespace bench
