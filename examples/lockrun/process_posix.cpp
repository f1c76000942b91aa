// What lockrun learns of other processes: their /proc entries (Linux), pidfds,
// and whether a lease record was written in our own PID space. Everything
// here answers "unknown" (0, empty, -1) where the system cannot tell.
#include "lockrun.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include <cerrno>
#include <charconv>
#include <string_view>

namespace lockrun {

namespace {

std::string read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string text;
  char buffer[4096];
  ssize_t n;
  while (text.size() < 65536 && ((n = ::read(fd, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0) text.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return text;
}

std::string our_boot_id() {
  auto text = read_small_file("/proc/sys/kernel/random/boot_id");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::uint64_t our_pid_namespace() {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

}  // namespace

std::optional<process_info> read_process(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const std::string text = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  // The command name (field 2) may hold spaces and parentheses: count the
  // fields after the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::string_view rest = std::string_view(text).substr(close + 1);
  process_info info;
  for (int field = 3; field <= 22; ++field) {
    const auto begin = rest.find_first_not_of(' ');
    if (begin == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(begin);
    const auto end = std::min(rest.find(' '), rest.size());
    const auto token = rest.substr(0, end);
    if (field == 3) info.state = token.front();
    if (field == 4) std::from_chars(token.data(), token.data() + token.size(), info.parent);
    if (field == 22 && std::from_chars(token.data(), token.data() + token.size(), info.start_time).ec != std::errc{})
      return std::nullopt;
    rest.remove_prefix(end);
  }
  return info;
}

bool is_running(pid_t pid, unsigned long long start_time) {
  const auto info = read_process(pid);
  if (!info) return false;
  return info->state != 'Z' && info->state != 'X' && (start_time == 0 || info->start_time == start_time);
}

std::vector<std::string> command_line_of(pid_t pid) {
  const std::string text = read_small_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> args;
  for (std::size_t begin = 0; begin < text.size();) {
    const auto end = std::min(text.find('\0', begin), text.size());
    args.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return args;
}

bool lease_is_local(const lockfile::Lease& lease) {
  static const std::string boot = our_boot_id();
  static const std::uint64_t pid_space = our_pid_namespace();
  return !boot.empty() && pid_space != 0 && lease.boot_id == boot && lease.pid_namespace == pid_space;
}

int open_pidfd(pid_t pid) {
#if defined(__linux__) && defined(SYS_pidfd_open)
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));  // always close-on-exec
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

bool signal_pidfd(int pidfd, pid_t pid, int sig) {
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
  if (pidfd >= 0) {
    if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0) return true;
    if (errno != ENOSYS) return false;
  }
#else
  (void)pidfd;
#endif
  return ::kill(pid, sig) == 0;
}

}  // namespace lockrun
