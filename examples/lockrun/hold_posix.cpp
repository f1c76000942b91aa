// --hold and --release: a lock held for the calling shell, lockrun's answer
// to flock(1)'s descriptor form (`exec 9>FILE; flock -n 9`).
//
// A lease needs a process that renews it, and the shell cannot: so
// `lockrun --hold FILE` starts a background holder that takes the lock,
// renews it, and gives it up when the caller (lockrun's parent, the shell)
// exits or `lockrun --release FILE` asks it to.
//
//   caller (the shell)
//     └─ lockrun --hold FILE             the foreground part: hold()
//          └─ (middle child: setsid, fork, exit)
//               └─ lockrun --hold-for=CALLER:START [the same options] --hold FILE
//                                        the background holder: hold_in_background()
//
// The holder is a daemon: its own session, stdin and stdout on /dev/null, no
// descriptor of the caller's but one pidfd on the caller (fd 3, where
// there are pidfds) and, until the lock is taken, its stderr: a socket to
// the foreground part, which prints what the holder says there and exits
// with the holder's result. It is re-executed (not just forked) so that its
// command line says what it is: `--hold-for=CALLER:START` is how --holder
// and --release recognise it (START, the caller's start time, tells a
// reused pid apart).
//
// The hand-over is two-sided, so that the foreground part exits 0 exactly
// when the lock stays held: the holder sends "held", the foreground part
// blocks its signals, answers "A" and exits 0. A foreground part that dies
// first (Ctrl-C while waiting) closes the socket; the holder, seeing that
// instead of "A", gives the lock up and exits.
//
// Watching the caller: a pidfd (Linux 5.3+) becomes readable when it exits;
// elsewhere the holder checks at every heartbeat that the caller still runs
// (kill(pid, 0), and its start time where /proc has one).
#include "lockrun.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <thread>

namespace lockrun {

namespace {

using std::chrono::steady_clock;

constexpr int channel_fd = 2;       // the holder's stderr, until the hand-over
constexpr int caller_pidfd_fd = 3;  // in the holder, where there are pidfds
constexpr std::string_view hold_for_prefix = "--hold-for=";

// How long --release waits for the holder to remove the file.
constexpr auto release_limit = 30s;

// Frames on the channel: a NUL byte (never part of a message), a letter,
// a number, a newline. "H0": held. "E<status>": gave up; exit with status.
void send_frame(char kind, int value) {
  const std::string frame = std::string(1, '\0') + kind + std::to_string(value) + "\n";
  (void)!::send(channel_fd, frame.data(), frame.size(), MSG_NOSIGNAL);
}

std::optional<std::pair<pid_t, unsigned long long>> parse_hold_for(std::string_view text) {
  if (!text.starts_with(hold_for_prefix)) return std::nullopt;
  text.remove_prefix(hold_for_prefix.size());
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  pid_t pid = 0;
  unsigned long long start = 0;
  const auto first = std::from_chars(text.data(), text.data() + colon, pid);
  const auto second = std::from_chars(text.data() + colon + 1, text.data() + text.size(), start);
  if (first.ec != std::errc{} || first.ptr != text.data() + colon || second.ec != std::errc{} ||
      second.ptr != text.data() + text.size() || pid <= 0)
    return std::nullopt;
  return std::pair{pid, start};
}

unsigned long long start_time_of(pid_t pid) {
  const auto info = read_process(pid);
  return info ? info->start_time : 0;
}

// Whether `target` (pid, start time) is this process or one of its
// ancestors: the shell that ran --hold, seen from a --release it runs,
// perhaps in a subshell or a script of its own. This process itself, because
// a shell execs the last command of a subshell in the subshell's process:
// `( lockrun --hold F; ...; lockrun --release F )`.
bool is_our_ancestor(const std::pair<pid_t, unsigned long long>& target) {
  pid_t pid = ::getpid();
  for (int depth = 0; pid > 0 && depth < 64; ++depth) {
    const auto info = read_process(pid);
    if (pid == target.first) return !info || target.second == 0 || info->start_time == target.second;
    if (!info || pid == 1) return false;
    pid = info->parent;
  }
  return false;
}

void close_from(int lowest) {
#if defined(__linux__)
  if (::close_range(static_cast<unsigned>(lowest), ~0U, 0) == 0) return;
#endif
  const long most = std::min(::sysconf(_SC_OPEN_MAX), 65536L);
  for (int fd = lowest; fd < most; ++fd) ::close(fd);
}

// In the middle child of hold(): become the background holder. Never returns.
[[noreturn]] void start_background_holder(int channel, int caller_pidfd, std::vector<char*>& args) {
  // Its own session (no terminal, no job-control signals), and not its
  // leader (it can never acquire a terminal): fork once more.
  ::setsid();
  const pid_t holder = ::fork();
  if (holder != 0) ::_exit(holder < 0 ? exit_os_error : 0);

  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  // Out of the way of 0-3 first, so that the dup2()s below cannot clobber them.
  const int high_channel = ::fcntl(channel, F_DUPFD_CLOEXEC, 10);
  const int high_pidfd = caller_pidfd >= 0 ? ::fcntl(caller_pidfd, F_DUPFD_CLOEXEC, 10) : -1;
  if (null_fd < 0 || high_channel < 0) ::_exit(exit_os_error);
  ::dup2(null_fd, 0);
  ::dup2(null_fd, 1);
  ::dup2(high_channel, channel_fd);
  if (high_pidfd >= 0) ::dup2(high_pidfd, caller_pidfd_fd);
  // Nothing else of the caller's: `exec 9>file` in the shell stays there.
  close_from(high_pidfd >= 0 ? caller_pidfd_fd + 1 : caller_pidfd_fd);

  // A clean start: no signal blocked, the ones it handles at their defaults
  // (an ignored SIGTERM would survive exec and make --release fail).
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &default_action, nullptr);
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);

#if defined(__linux__)
  ::execv("/proc/self/exe", args.data());
#endif
  ::execv(args[0], args.data());
  const std::string message = std::string("lockrun: cannot start the background holder: ") + std::strerror(errno) + "\n";
  (void)!::write(channel_fd, message.data(), message.size());
  send_frame('E', exit_os_error);
  ::_exit(exit_os_error);
}

// The foreground part's end of the hand-over: prints what the holder says,
// and returns the holder's result (0 once the lock is held).
int await_holder(int channel) {
  std::string pending;
  for (;;) {
    char buffer[1024];
    const ssize_t n = ::read(channel, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (!pending.empty()) std::fputs(pending.c_str(), stderr);
      say("the background holder exited before taking the lock");
      return exit_os_error;
    }
    pending.append(buffer, static_cast<std::size_t>(n));
    for (;;) {
      const auto nul = pending.find('\0');
      std::fwrite(pending.data(), 1, std::min(nul, pending.size()), stderr);
      if (nul == std::string::npos) {
        pending.clear();
        break;
      }
      pending.erase(0, nul);
      const auto end = pending.find('\n');
      if (end == std::string::npos) break;  // the rest of the frame is still coming
      const char kind = pending[1];
      int value = exit_os_error;
      std::from_chars(pending.data() + 2, pending.data() + end, value);
      pending.erase(0, end + 1);
      if (kind == 'H') {
        // From here on nothing may stop us between the answer and exit 0.
        sigset_t all;
        sigfillset(&all);
        ::sigprocmask(SIG_BLOCK, &all, nullptr);
        const char ack = 'A';
        if (::send(channel, &ack, 1, MSG_NOSIGNAL) != 1) {
          say("the background holder exited before taking the lock");
          return exit_os_error;
        }
        return 0;
      }
      if (kind == 'E') return value;
    }
  }
}

}  // namespace

std::optional<std::pair<pid_t, unsigned long long>> hold_target_of(const lockfile::Lease& lease) {
  if (!lease_is_local(lease) || !is_running(lease.pid, lease.start_time)) return std::nullopt;
  const auto args = command_line_of(lease.pid);
  if (args.size() < 2) return std::nullopt;
  return parse_hold_for(args[1]);
}

int hold(const config& cfg, int argc, char** argv) {
  const pid_t caller = ::getppid();
  const unsigned long long caller_start = start_time_of(caller);

  // Held for this caller, or for a shell it runs in (a subshell's parent),
  // already: done, as flock on an inherited descriptor that holds the lock
  // succeeds again. (Errors are left to the holder to report.)
  try {
    const auto status = lockfile::inspect(cfg.lock_file, lock_options(cfg));
    if (status.state == lockfile::LockState::held && status.lease) {
      const auto target = hold_target_of(*status.lease);
      if (target && is_our_ancestor(*target)) {
        if (cfg.verbose)
          say(cfg.lock_file + " is already held for pid " + std::to_string(target->first) + " by pid " +
              std::to_string(status.lease->pid));
        return 0;
      }
    }
  } catch (const std::exception&) {
  }

  // A pidfd opened while the caller is our parent names the caller: were it
  // gone, our parent would be another process by now.
  const int caller_pidfd = open_pidfd(caller);
  if (caller_pidfd >= 0 && ::getppid() != caller) {
    say("the calling process exited");
    return exit_os_error;
  }
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
    say(std::string("cannot start the background holder: ") + std::strerror(errno));
    return exit_os_error;
  }
  std::string hold_for = std::string(hold_for_prefix) + std::to_string(caller) + ":" + std::to_string(caller_start);
  std::vector<char*> args{argv[0], hold_for.data()};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);

  // No library thread runs in this process (inspect starts none): forking is safe.
  std::fflush(nullptr);
  const pid_t middle = ::fork();
  if (middle == 0) start_background_holder(channel[1], caller_pidfd, args);
  const int fork_error = errno;
  ::close(channel[1]);
  if (caller_pidfd >= 0) ::close(caller_pidfd);
  if (middle < 0) {
    ::close(channel[0]);
    say(std::string("cannot start the background holder: ") + std::strerror(fork_error));
    return exit_os_error;
  }
  int status = 0;
  while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {}
  const int result = await_holder(channel[0]);
  ::close(channel[0]);
  return result;
}

int hold_in_background(const config& given) {
  struct stat st {};
  if (::fstat(channel_fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    std::fprintf(stderr, "lockrun: --hold-for is lockrun's own, used by --hold\n%s", usage_text);
    return exit_usage;
  }
  const auto caller = *given.hold_for;
  int caller_pidfd = ::fcntl(caller_pidfd_fd, F_GETFD) >= 0 ? caller_pidfd_fd : -1;
  if (caller_pidfd >= 0) ::fcntl(caller_pidfd, F_SETFD, FD_CLOEXEC);

  // The daemon keeps no directory busy: the library gets the lock file's
  // absolute name; messages keep the name the user gave.
  const config& cfg = given;
  config absolute_cfg = given;
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(cfg.lock_file, ec);
  if (!ec) absolute_cfg.lock_file = absolute.string();

  signal_setup setup;
  if (const auto ec = install_signal_handlers(setup)) {
    say("cannot set up signal handling: " + ec.message());
    send_frame('E', exit_os_error);
    return exit_os_error;
  }
  int exit_status = 0;
  const auto made = make_lock(absolute_cfg, exit_status);
  (void)!::chdir("/");
  if (!made) {
    send_frame('E', exit_status);
    return exit_status;
  }
  lockfile::PIDLock& lock = *made;
  const auto heartbeat = lock_options(cfg).lease_heartbeat_interval;

  // The caller gone, or the foreground part (its socket hung up): stop waiting.
  pollfd cancel_on[] = {{channel_fd, POLLIN, 0}, {caller_pidfd, POLLIN, 0}};
  const take_result taken = take_lock(lock, cfg, setup, cancel_on);
  if (!taken.acquired) {
    if (taken.cancelled) say("the calling process exited, or lockrun --hold was interrupted");
    const int status = taken.cancelled ? exit_os_error : taken.exit_status;
    send_frame('E', status);
    return status;
  }
  if (!is_running(caller.first, caller.second)) {
    say("the calling process exited");
    release_lock(lock);
    send_frame('E', exit_os_error);
    return exit_os_error;
  }

  send_frame('H', 0);
  char answer = 0;
  ssize_t n;
  do n = ::recv(channel_fd, &answer, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n != 1 || answer != 'A') {  // the foreground part died before it could say "held"
    release_lock(lock);
    return 0;
  }
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, channel_fd);  // closes our end of the socket
    ::close(null_fd);
  }

  for (;;) {
    pollfd watched[] = {{caller_pidfd, POLLIN, 0}};
    const int timeout_ms = caller_pidfd >= 0 ? -1 : static_cast<int>(heartbeat.count());
    const std::string events = next_events(timeout_ms, watched);
    if (watched[0].revents != 0) break;  // the caller exited
    if (caller_pidfd < 0 && !is_running(caller.first, caller.second) &&
        (caller.second != 0 || (::kill(caller.first, 0) != 0 && errno == ESRCH)))
      break;
    bool done = false;
    for (const char c : events) {
      const auto event = static_cast<unsigned char>(c);
      if (event == event_lease_lost) return exit_lease_lost;  // nothing of ours is left to remove
      if (is_signal_event(event) && is_forwarded(signal_of(event))) done = true;  // --release, or shutdown
    }
    if (done) break;
  }
  release_lock(lock);
  return 0;
}

int release(const config& cfg) {
  lockfile::LockStatus status;
  try {
    status = lockfile::inspect(cfg.lock_file, lock_options(cfg));
  } catch (const std::filesystem::filesystem_error& e) {
    say(std::string("cannot inspect the lock: ") + e.what());
    return exit_status_for(e.code());
  } catch (const std::exception& e) {
    say(std::string("cannot inspect the lock: ") + e.what());
    return exit_os_error;
  }
  if (status.state == lockfile::LockState::foreign) {
    say(cfg.lock_file + ": exists and is not a lock file; refusing to touch it");
    return exit_lock_error;
  }
  if (status.state == lockfile::LockState::free) {
    say(cfg.lock_file + " is not held");
    return exit_not_held;
  }
  const auto target = status.lease ? hold_target_of(*status.lease) : std::nullopt;
  if (!target) {
    say(describe_holder(cfg.lock_file, status.lease) + "; that is not a lockrun --hold");
    return exit_not_held;
  }
  if (!is_our_ancestor(*target)) {
    say(describe_holder(cfg.lock_file, status.lease) + "; that --hold is not of this shell");
    return exit_not_held;
  }
  const lockfile::Lease holder = *status.lease;
  // Pin the holder: a pidfd opened while its start time still matches
  // cannot signal a process that reused its pid.
  const int holder_pidfd = open_pidfd(holder.pid);
  if (!is_running(holder.pid, holder.start_time)) {
    if (holder_pidfd >= 0) ::close(holder_pidfd);
    say(cfg.lock_file + ": its holder exited meanwhile");
    return exit_not_held;
  }
  if (!signal_pidfd(holder_pidfd, holder.pid, SIGTERM)) {
    const int error = errno;
    if (holder_pidfd >= 0) ::close(holder_pidfd);
    say("cannot signal the background holder (pid " + std::to_string(holder.pid) + "): " + std::strerror(error));
    return exit_os_error;
  }

  // Done when the file no longer holds the holder's record (it may hold a
  // new owner's by then).
  const auto deadline = steady_clock::now() + release_limit;
  int result = exit_lock_error;
  for (;;) {
    const bool exited = !is_running(holder.pid, holder.start_time);  // before looking at the file
    bool ours = false;
    try {
      const auto now = lockfile::inspect(cfg.lock_file, lock_options(cfg));
      ours = now.lease && now.lease->owner_id == holder.owner_id && now.state != lockfile::LockState::free;
    } catch (const std::exception&) {
      ours = true;
    }
    if (!ours) {
      result = 0;
      break;
    }
    if (exited) {
      say("the background holder (pid " + std::to_string(holder.pid) + ") exited without removing " +
          cfg.lock_file);
      break;
    }
    if (steady_clock::now() >= deadline) {
      say("the background holder (pid " + std::to_string(holder.pid) + ") did not release " + cfg.lock_file +
          " within " + std::to_string(release_limit.count()) + " s");
      break;
    }
    if (holder_pidfd >= 0) {
      pollfd exit_event{holder_pidfd, POLLIN, 0};
      ::poll(&exit_event, 1, 20);
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  if (holder_pidfd >= 0) ::close(holder_pidfd);
  return result;
}

}  // namespace lockrun
