// Starting COMMAND and supervising it, on POSIX: fork and execve from the
// main thread, signals passed on, a lost lease acted on, the wait status
// turned into lockrun's exit status.
#include "lockrun.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace lockrun {

namespace {

// The paths execvp would try for `name`, in its order: `name` itself when it
// has a slash, else each directory of PATH (an empty entry is the current
// directory). Worked out before fork: the child of a threaded process may
// only make async-signal-safe calls, and execvp is not one.
std::vector<std::string> exec_candidates(const char* name) {
  if (std::strchr(name, '/') != nullptr || *name == '\0') return {name};
  const char* path = std::getenv("PATH");
  const std::string_view dirs = path != nullptr ? path : "/bin:/usr/bin";  // glibc's default
  std::vector<std::string> candidates;
  for (std::size_t begin = 0;;) {
    const std::size_t colon = dirs.find(':', begin);
    const std::string_view dir = dirs.substr(begin, colon == std::string_view::npos ? colon : colon - begin);
    candidates.push_back((dir.empty() ? std::string(".") : std::string(dir)) + "/" + name);
    if (colon == std::string_view::npos) break;
    begin = colon + 1;
  }
  return candidates;
}

// In the child, between fork and exec: async-signal-safe calls only. Never
// returns; an exec failure's errno goes to `error_fd`.
[[noreturn]] void exec_child(const config& cfg, const signal_setup& setup, const std::vector<std::string>& candidates,
                             pid_t parent, int error_fd) {
  // Our handlers would post events into the pipe we share with lockrun: back
  // to the defaults (while every signal is still blocked), then the empty
  // mask the command starts with. Ignored signals stay ignored.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig)
    if (sigismember(&setup.handled, sig) == 1) ::sigaction(sig, &default_action, nullptr);
#if defined(__linux__)
  // Die with lockrun, so that the command never runs on without the lock.
  // The signal comes when the *thread* that forked exits: we fork from the
  // main thread, which lives as long as lockrun. And lockrun may already be
  // gone (we would then have been reparented): check after asking.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(128 + SIGKILL);
#else
  (void)parent;
#endif
  sigset_t empty;
  sigemptyset(&empty);
  ::pthread_sigmask(SIG_SETMASK, &empty, nullptr);

  // As execvp: try each candidate; EACCES from one is reported only when no
  // later one runs, a missing one is skipped, any other error stops.
  int error = ENOENT;
  bool denied = false;
  for (const auto& candidate : candidates) {
    ::execve(candidate.c_str(), cfg.command.data(), environ);
    if (errno == EACCES) {
      denied = true;
    } else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENODEV && errno != ETIMEDOUT) {
      error = errno;
      break;
    }
  }
  if (denied && error == ENOENT) error = EACCES;
  (void)!::write(error_fd, &error, sizeof error);
  ::_exit(exit_cannot_execute);
}

// Starts the command; 0 or the errno of the failed exec (or fork). Must run
// on the main thread (see exec_child). The child starts with an empty signal
// mask and default handlers for the signals we handle.
int spawn_command(const config& cfg, const signal_setup& setup, pid_t& child) {
  const auto candidates = exec_candidates(cfg.command[0]);
  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) return errno;

  // Every signal blocked across the fork, so that none runs our handler in
  // the child before exec_child has reset it.
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t parent = ::getpid();
  child = ::fork();
  if (child == 0) exec_child(cfg, setup, candidates, parent, error_pipe[1]);
  const int fork_error = child < 0 ? errno : 0;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ::close(error_pipe[1]);
  if (fork_error != 0) {
    ::close(error_pipe[0]);
    return fork_error;
  }

  // The write end closes at a successful exec: end of file, no error.
  int error = 0;
  ssize_t n;
  do n = ::read(error_pipe[0], &error, sizeof error);
  while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n != static_cast<ssize_t>(sizeof error)) return 0;
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {}
  return error != 0 ? error : EACCES;
}

// Collects the command's wait status, forwarding signals and acting on a lost
// lease until it exits. Sets `lost` when the lease was lost while it ran.
int supervise(pid_t child, const config& cfg, bool& lost) {
  using std::chrono::steady_clock;
  lost = false;
  // After --on-lost term's SIGTERM: when the command gets SIGKILL.
  std::optional<steady_clock::time_point> kill_at;
  for (;;) {
    int timeout_ms = -1;
    if (kill_at) {
      const auto left = std::chrono::ceil<milliseconds>(*kill_at - steady_clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
    }
    const std::string events = next_events(timeout_ms);
    // The child first: if it has exited, the batch's signals and a loss that
    // raced with its exit no longer concern it.
    int status = 0;
    pid_t reaped;
    do reaped = ::waitpid(child, &status, WNOHANG);
    while (reaped < 0 && errno == EINTR);
    if (reaped == child || (reaped < 0 && errno == ECHILD)) return status;

    if (kill_at && steady_clock::now() >= *kill_at) {
      say("the command did not exit within " + cfg.kill_after_text + " s of SIGTERM; killing it");
      ::kill(child, SIGKILL);
      kill_at.reset();
    }

    for (const char c : events) {
      const auto event = static_cast<unsigned char>(c);
      if (event == event_lease_lost && !lost) {
        lost = true;
        const char* action = cfg.on_lost == lost_action::term   ? "sending SIGTERM to the command"
                             : cfg.on_lost == lost_action::kill ? "killing the command"
                                                                : "the command runs on (--on-lost ignore)";
        say("lost the lease on " + cfg.lock_file + "; " + action);
        if (cfg.on_lost == lost_action::term) {
          ::kill(child, SIGTERM);
          kill_at = steady_clock::now() + cfg.kill_after;
        }
        if (cfg.on_lost == lost_action::kill) ::kill(child, SIGKILL);
      } else if (is_signal_event(event) && is_forwarded(signal_of(event)) && !(event & from_terminal)) {
        // The child is not reaped yet, so its pid cannot have been reused.
        ::kill(child, signal_of(event));
      }
    }
  }
}

// The exit status for the command's wait status. After a lost lease that
// lockrun acted on (term/kill), 76 -- unless the command exited with a
// non-zero status of its own, which says more. With --on-lost ignore, the
// command's status as always.
int exit_status_of(int wait_status, bool lost, const config& cfg) {
  const bool exited = WIFEXITED(wait_status);
  const int own = exited ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
  if (lost && cfg.on_lost != lost_action::ignore)
    return exited && WEXITSTATUS(wait_status) != 0 ? own : exit_lease_lost;
  return own;
}

}  // namespace

int run_command(const config& cfg, const signal_setup& setup) {
  pid_t child = -1;
  if (const int err = spawn_command(cfg, setup, child); err != 0) {
    say(std::string("cannot run '") + cfg.command[0] + "': " + std::strerror(err));
    return err == ENOENT ? exit_not_found : exit_cannot_execute;
  }
  bool lost = false;
  const int wait_status = supervise(child, cfg, lost);
  return exit_status_of(wait_status, lost, cfg);
}

}  // namespace lockrun
