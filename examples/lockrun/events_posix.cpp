// The event pipe and the signal handlers, on POSIX (see main.cpp for why).
#include "lockrun.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

namespace lockrun {

namespace {

constexpr int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

// Global because the signal handler needs it; set once before any handler.
int event_read_fd = -1;
int event_write_fd = -1;

}  // namespace

// Async-signal-safe and thread-safe: one write() of one byte. The write end
// is non-blocking: should the pipe ever be full, the loop has bytes to read
// anyway, and it looks at the child after every batch.
void post_event(unsigned char event) {
  const int saved = errno;
  (void)!::write(event_write_fd, &event, 1);
  errno = saved;
}

namespace {

extern "C" void on_signal(int sig, siginfo_t* info, void*) {
  auto event = static_cast<unsigned char>(sig);
#if defined(SI_KERNEL)
  // Linux marks a signal the terminal sent (^C, ^\, hangup) SI_KERNEL. The
  // terminal sends it to the whole foreground process group, which includes
  // the command: forwarding it again would deliver it twice (and "press ^C
  // twice to force quit" programs would force quit).
  if (info != nullptr && info->si_code == SI_KERNEL) event |= from_terminal;
#else
  (void)info;
#endif
  post_event(event);
}

}  // namespace

// Creates the event pipe and installs the handlers, with the handled signals
// blocked in this thread. Call before the library starts any thread, so that
// its threads inherit the blocked mask and the handlers run on this thread
// only. A signal that was ignored when lockrun started stays ignored, for
// lockrun and for the command, as if the command had been started directly
// (nohup, or "&" in a non-interactive shell, ignore SIGINT and SIGHUP).
std::error_code install_signal_handlers(signal_setup& setup) {
  const auto failed = [] { return std::error_code(errno, std::generic_category()); };
  int fds[2];
  if (::pipe(fds) != 0) return failed();
  for (const int fd : fds) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  for (const int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  event_read_fd = fds[0];
  event_write_fd = fds[1];

  sigemptyset(&setup.handled);
  for (const int sig : forwarded_signals) {
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) continue;
    sigaddset(&setup.handled, sig);
  }
  sigaddset(&setup.handled, SIGCHLD);
  if (const int error = ::pthread_sigmask(SIG_BLOCK, &setup.handled, nullptr); error != 0)
    return {error, std::generic_category()};

  struct sigaction action {};
  action.sa_sigaction = on_signal;
  sigfillset(&action.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) {
    if (sigismember(&setup.handled, sig) != 1) continue;
    action.sa_flags = SA_SIGINFO | SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    if (::sigaction(sig, &action, nullptr) != 0) return failed();
  }
  return {};
}

void unblock_signals(const signal_setup& setup) { ::pthread_sigmask(SIG_UNBLOCK, &setup.handled, nullptr); }

std::string next_events(int timeout_ms, std::span<pollfd> watched) {
  pollfd fds[8];
  const std::size_t count = std::min<std::size_t>(watched.size(), std::size(fds) - 1);
  fds[0] = {event_read_fd, POLLIN, 0};
  for (std::size_t k = 0; k < count; ++k) fds[k + 1] = {watched[k].fd, watched[k].events, 0};
  const int ready = ::poll(fds, static_cast<nfds_t>(count + 1), timeout_ms);
  for (std::size_t k = 0; k < count; ++k) watched[k].revents = ready > 0 ? fds[k + 1].revents : 0;
  if (ready <= 0 || (fds[0].revents & POLLIN) == 0) return {};  // EINTR: a handler wrote; read on the next call
  std::string events;
  char buffer[256];
  ssize_t n;
  while ((n = ::read(event_read_fd, buffer, sizeof buffer)) > 0) events.append(buffer, static_cast<std::size_t>(n));
  return events;
}

bool is_signal_event(unsigned char event) { return (event & ~from_terminal) < event_lease_lost; }
int signal_of(unsigned char event) { return event & ~from_terminal & 0xFF; }
// The signals lockrun passes on (SIGCHLD only wakes the loop).
bool is_forwarded(int sig) { return sig != SIGCHLD; }

}  // namespace lockrun
