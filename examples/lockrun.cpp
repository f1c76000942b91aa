// lockrun: run a command while holding a lockfile lease lock.
//
//   lockrun [OPTIONS] LOCKFILE -- COMMAND [ARG...]
//   lockrun --status [--stale SECONDS] LOCKFILE
//
// Takes the lock (or waits for it with -w/-t), runs COMMAND as a child, passes
// SIGINT, SIGTERM, SIGHUP and SIGQUIT on to it, releases the lock when it
// exits and exits with its status (128+N when it died of signal N). When the
// lease is lost while the command runs (the file was deleted or replaced, or
// lockrun was paused past the stale threshold and someone took over), the
// command is stopped (--on-lost). `lockrun --help` lists the exit statuses.
//
// How it is built, and why:
//   - One event pipe (the self-pipe trick) carries everything the main loop
//     reacts to: signals (written by async-signal-safe handlers), the lost
//     lease (written by the library's notifier thread) and the end of a wait
//     (written by the waiting thread). The main thread blocks in poll() on it,
//     so no real work ever happens inside a signal handler.
//   - The handled signals are blocked before the library starts any thread;
//     threads inherit the mask, so the handlers only ever run on the main
//     thread and never interrupt a system call inside the library.
//   - The command is started with fork and execve from the main thread (see
//     spawn_command): exec failures come back through a close-on-exec pipe
//     (ENOENT -> 127, anything else -> 126), the child resets the signal mask
//     and our handlers, so the command starts with an empty mask and default
//     handlers, and on Linux it asks to be killed when lockrun dies
//     (PR_SET_PDEATHSIG), so that even a SIGKILLed lockrun leaves no command
//     running without the lock. posix_spawnp cannot set that.
//   - The lock's file descriptor is opened O_CLOEXEC by the library, and our
//     event pipe is O_CLOEXEC too: the command inherits neither.
#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------
// Exit statuses (sysexits.h values where one fits).
// ---------------------------------------------------------------------------
constexpr int exit_status_held = 0;       // --status: held
constexpr int exit_status_free = 1;       // --status: free
constexpr int exit_status_stale = 2;      // --status: stale
constexpr int exit_status_foreign = 3;    // --status: a file that is not a lock is at the path
constexpr int exit_usage = 64;            // EX_USAGE
constexpr int exit_os_error = 71;         // EX_OSERR: pipe, sigaction, thread failed
constexpr int exit_lock_error = 74;       // EX_IOERR: the lock file cannot be created or read
constexpr int exit_conflict = 75;         // EX_TEMPFAIL: default for -E
constexpr int exit_lease_lost = 76;       // the lease was lost while the command ran
constexpr int exit_cannot_execute = 126;  // as the shell: found but not executable
constexpr int exit_not_found = 127;       // as the shell: not found

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------
const char usage_text[] =
    "Usage: lockrun [OPTIONS] LOCKFILE -- COMMAND [ARG...]\n"
    "       lockrun --status [--stale SECONDS] LOCKFILE\n";

// What becomes of COMMAND when lockrun dies without stopping it (SIGKILL, a
// crash): see spawn_command.
#if defined(__linux__)
#define LOCKRUN_DEATH_TEXT                                                           \
  "If lockrun dies without stopping COMMAND (SIGKILL, a crash), COMMAND gets\n"      \
  "SIGKILL too, so it never runs on without the lock. Processes that COMMAND\n"     \
  "started itself are not signalled.\n"
#else
#define LOCKRUN_DEATH_TEXT                                                           \
  "If lockrun dies without stopping COMMAND (SIGKILL, a crash), COMMAND is not\n"   \
  "stopped on this system: it may run on without the lock, whose lease is no\n"    \
  "longer renewed, goes stale after --stale seconds, and may then be taken over\n" \
  "by another process.\n"
#endif

const char help_text[] =
    "\n"
    "Run COMMAND while holding the lease lock LOCKFILE (created if missing, removed\n"
    "afterwards). Signals INT, TERM, HUP and QUIT sent to lockrun are passed on.\n"
    LOCKRUN_DEATH_TEXT
    "A file at LOCKFILE that is not a lock file is never touched (exit 74).\n"
    "\n"
    "Options:\n"
    "  -w, --wait                  wait until the lock is free (default: give up at once)\n"
    "  -t, --timeout SECONDS       wait at most SECONDS (fractions allowed); implies --wait\n"
    "      --stale SECONDS         lease stale threshold (default 3)\n"
    "      --heartbeat MS          lease renewal interval in ms (default 250, at most\n"
    "                              a quarter of --stale when only --stale is given)\n"
    "  -E, --conflict-exit-code N  exit status when the lock is held (default 75)\n"
    "      --on-lost ACTION        when the lease is lost: term (default) sends COMMAND\n"
    "                              SIGTERM, kill sends SIGKILL, ignore lets it run on\n"
    "      --kill-after SECONDS    with --on-lost term: send SIGKILL when COMMAND has\n"
    "                              not exited SECONDS after the SIGTERM (default 5,\n"
    "                              fractions allowed)\n"
    "  -q, --quiet                 do not report who holds the lock\n"
    "      --status                print the lock's state as one JSON object\n"
    "  -h, --help                  show this help and exit\n"
    "      --version               show the version and exit\n"
    "\n"
    "Exit status:\n"
    "  COMMAND's own status, or 128+N when it died of signal N\n"
    "  75   the lock is held (or --timeout passed); see -E\n"
    "  76   the lease was lost and COMMAND was stopped (its own non-zero exit\n"
    "       status wins)\n"
    "  64   bad usage\n"
    "  74   the lock file cannot be created or read, or LOCKFILE is a file that is\n"
    "       not a lock file (left as it is)\n"
    "  126  COMMAND cannot be executed          127  COMMAND not found\n"
    "  128+N  lockrun got signal N before COMMAND started\n"
    "  --status: 0 held, 1 free, 2 stale, 3 not a lock file (\"state\":\"foreign\")\n";
#undef LOCKRUN_DEATH_TEXT

enum class lost_action { term, kill, ignore };

struct config {
  bool help = false;
  bool version = false;
  bool status = false;
  bool wait = false;
  bool quiet = false;
  std::optional<double> timeout_seconds;  // implies wait
  std::string timeout_text;               // as given, for messages
  std::optional<milliseconds> stale;
  std::optional<milliseconds> heartbeat;
  int conflict_exit = exit_conflict;
  lost_action on_lost = lost_action::term;
  milliseconds kill_after = 5s;     // --on-lost term: SIGKILL this long after SIGTERM
  std::string kill_after_text = "5";  // as given, for messages
  std::string lock_file;
  std::vector<char*> command;  // argv for the command, null-terminated
};

struct usage_error {
  std::string message;
};

// Whole-string numbers only: no sign, no spaces, no trailing bytes. from_chars
// is locale-independent (strtod would read "1,5" in some locales).
std::optional<double> parse_seconds(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<long long> parse_integer(std::string_view text) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

[[noreturn]] void bad_value(std::string_view option, std::string_view value, std::string_view expected) {
  throw usage_error{"invalid value '" + std::string(value) + "' for " + std::string(option) + ": expected " +
                    std::string(expected)};
}

struct option_spec {
  const char* long_name;
  char short_name;  // '\0' when there is none
  bool takes_value;
};

constexpr option_spec option_specs[] = {
    {"wait", 'w', false},           {"timeout", 't', true},  {"stale", '\0', true},
    {"heartbeat", '\0', true},      {"conflict-exit-code", 'E', true},
    {"on-lost", '\0', true},        {"kill-after", '\0', true}, {"quiet", 'q', false},
    {"status", '\0', false},        {"help", 'h', false},        {"version", '\0', false},
};

// Applies one option; `spelled` is how the user wrote it, for messages.
void apply_option(config& cfg, const option_spec& spec, std::string_view spelled, std::string_view value) {
  const std::string_view name = spec.long_name;
  if (name == "wait") {
    cfg.wait = true;
  } else if (name == "timeout") {
    const auto seconds = parse_seconds(value);
    if (!seconds || *seconds < 0) bad_value(spelled, value, "a number of seconds >= 0");
    cfg.timeout_seconds = *seconds;
    cfg.timeout_text = std::string(value);
    cfg.wait = true;
  } else if (name == "stale") {
    const auto seconds = parse_seconds(value);
    // 24 h is also the most a record's own threshold may impose on others.
    if (!seconds || *seconds <= 0 || *seconds > 86400)
      bad_value(spelled, value, "a number of seconds > 0 and <= 86400");
    cfg.stale = milliseconds(static_cast<long long>(std::ceil(*seconds * 1000)));
  } else if (name == "heartbeat") {
    const auto ms = parse_integer(value);
    if (!ms || *ms <= 0 || *ms > 86'400'000) bad_value(spelled, value, "whole milliseconds > 0");
    cfg.heartbeat = milliseconds(*ms);
  } else if (name == "conflict-exit-code") {
    const auto code = parse_integer(value);
    if (!code || *code < 0 || *code > 255) bad_value(spelled, value, "an exit status from 0 to 255");
    cfg.conflict_exit = static_cast<int>(*code);
  } else if (name == "on-lost") {
    if (value == "term") cfg.on_lost = lost_action::term;
    else if (value == "kill") cfg.on_lost = lost_action::kill;
    else if (value == "ignore") cfg.on_lost = lost_action::ignore;
    else bad_value(spelled, value, "term, kill or ignore");
  } else if (name == "kill-after") {
    const auto seconds = parse_seconds(value);
    if (!seconds || *seconds < 0 || *seconds > 86400)
      bad_value(spelled, value, "a number of seconds >= 0 and <= 86400");
    cfg.kill_after = milliseconds(static_cast<long long>(std::ceil(*seconds * 1000)));
    cfg.kill_after_text = std::string(value);
  } else if (name == "quiet") {
    cfg.quiet = true;
  } else if (name == "status") {
    cfg.status = true;
  } else if (name == "help") {
    cfg.help = true;
  } else if (name == "version") {
    cfg.version = true;
  }
}

// Parses argv. Options may come before or after LOCKFILE, but not after "--".
// --help and --version end parsing where they stand.
config parse_command_line(int argc, char** argv) {
  config cfg;
  bool have_separator = false;
  int i = 1;
  // The value of an option: the rest of the argument, or the next argument.
  auto take_value = [&](std::string_view spelled, std::string_view attached, bool has_attached) {
    if (has_attached) return attached;
    if (i + 1 >= argc) throw usage_error{"option " + std::string(spelled) + " needs a value"};
    return std::string_view(argv[++i]);
  };
  for (; i < argc && !cfg.help && !cfg.version; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      have_separator = true;
      ++i;
      break;
    }
    if (arg.starts_with("--")) {
      const auto eq = arg.find('=');
      const std::string_view name = arg.substr(2, eq == std::string_view::npos ? eq : eq - 2);
      const option_spec* spec = nullptr;
      for (const auto& candidate : option_specs)
        if (name == candidate.long_name) spec = &candidate;
      const std::string spelled = "--" + std::string(name);
      if (spec == nullptr) throw usage_error{"unknown option '" + spelled + "'"};
      if (!spec->takes_value && eq != std::string_view::npos)
        throw usage_error{"option " + spelled + " takes no value"};
      const std::string_view value =
          spec->takes_value ? take_value(spelled, arg.substr(eq == std::string_view::npos ? arg.size() : eq + 1),
                                         eq != std::string_view::npos)
                            : std::string_view{};
      apply_option(cfg, *spec, spelled, value);
    } else if (arg.size() > 1 && arg[0] == '-') {
      // A cluster of short options: "-wq", "-t5", "-qt 5".
      for (std::size_t k = 1; k < arg.size(); ++k) {
        const option_spec* spec = nullptr;
        for (const auto& candidate : option_specs)
          if (candidate.short_name == arg[k]) spec = &candidate;
        const std::string spelled = std::string("-") + arg[k];
        if (spec == nullptr) throw usage_error{"unknown option '" + spelled + "'"};
        if (spec->takes_value) {
          apply_option(cfg, *spec, spelled, take_value(spelled, arg.substr(k + 1), k + 1 < arg.size()));
          break;
        }
        apply_option(cfg, *spec, spelled, {});
        if (cfg.help || cfg.version) break;
      }
    } else if (cfg.lock_file.empty()) {
      cfg.lock_file = std::string(arg);
    } else {
      throw usage_error{"unexpected argument '" + std::string(arg) + "' (COMMAND must follow '--')"};
    }
  }
  if (cfg.help || cfg.version) return cfg;

  for (; i < argc; ++i) cfg.command.push_back(argv[i]);
  cfg.command.push_back(nullptr);

  if (cfg.lock_file.empty()) throw usage_error{"missing LOCKFILE"};
  if (cfg.status) {
    if (have_separator) throw usage_error{"--status takes no COMMAND"};
  } else if (!have_separator) {
    throw usage_error{"missing '--' and COMMAND after LOCKFILE"};
  } else if (cfg.command.size() == 1) {
    throw usage_error{"missing COMMAND after '--'"};
  }
  return cfg;
}

// The library's options from ours. Defaults are the library's (250 ms, 3 s);
// when only one of the two is given, the other is derived so that several
// heartbeats fit in one stale threshold.
lockfile::Options lock_options(const config& cfg) {
  lockfile::Options options;
  if (cfg.stale) options.lease_stale_threshold = *cfg.stale;
  if (cfg.heartbeat) options.lease_heartbeat_interval = *cfg.heartbeat;
  if (cfg.stale && !cfg.heartbeat)
    options.lease_heartbeat_interval = std::max(milliseconds(1), std::min(milliseconds(250), *cfg.stale / 4));
  if (cfg.heartbeat && !cfg.stale)
    options.lease_stale_threshold = std::max(milliseconds(3000), *cfg.heartbeat * 4);
  if (options.lease_heartbeat_interval >= options.lease_stale_threshold)
    throw usage_error{"--heartbeat (" + std::to_string(options.lease_heartbeat_interval.count()) +
                      " ms) must be shorter than --stale (" +
                      std::to_string(options.lease_stale_threshold.count()) +
                      " ms), or the lease would expire between heartbeats"};
  return options;
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------
void say(const std::string& message) { std::fprintf(stderr, "lockrun: %s\n", message.c_str()); }

long long to_millis(std::chrono::nanoseconds age) {
  return std::chrono::duration_cast<milliseconds>(age).count();
}

std::string describe_holder(const std::string& lock_file, const std::optional<lockfile::Lease>& holder) {
  if (!holder) return lock_file + " is held (its content is not a lease record)";
  std::string text = lock_file + " is held by pid " + std::to_string(holder->pid);
  if (!holder->host.empty()) text += " on host " + holder->host;
  const auto age = std::chrono::system_clock::now() - holder->heartbeat;
  return text + ", last heartbeat " + std::to_string(to_millis(age)) + " ms ago";
}

// ---------------------------------------------------------------------------
// --status: one JSON object on stdout
// ---------------------------------------------------------------------------

// The length of the well-formed UTF-8 sequence at text[i], or 0.
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) length = 2;
  else if (lead == 0xE0) length = 3, low = 0xA0;
  else if (lead == 0xED) length = 3, high = 0x9F;  // no surrogates
  else if (lead >= 0xE1 && lead <= 0xEF) length = 3;
  else if (lead == 0xF0) length = 4, low = 0x90;
  else if (lead >= 0xF1 && lead <= 0xF3) length = 4;
  else if (lead == 0xF4) length = 4, high = 0x8F;
  else return 0;
  if (i + length > text.size() || byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return length;
}

// A JSON string. A path may hold any bytes; JSON must be UTF-8, so a byte
// that is not part of a well-formed sequence becomes U+FFFD.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else if (c >= 0x80) {
      const std::size_t length = utf8_length(text, i);
      if (length == 0) {
        out += "\\ufffd";
        ++i;
        continue;
      }
      out.append(text.substr(i, length));
      i += length;
      continue;
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  return out + "\"";
}

std::string status_json(const std::string& lock_file, const lockfile::LockStatus& status) {
  const char* state = status.state == lockfile::LockState::held      ? "held"
                      : status.state == lockfile::LockState::stale   ? "stale"
                      : status.state == lockfile::LockState::foreign ? "foreign"
                                                                     : "free";
  const auto& lease = status.lease;
  const bool exists = status.state != lockfile::LockState::free;
  std::string out = "{\"state\":\"" + std::string(state) + "\"";
  out += ",\"path\":" + json_string(lock_file);
  out += ",\"validRecord\":" + std::string(lease ? "true" : "false");
  out += ",\"pid\":" + (lease ? std::to_string(lease->pid) : "null");
  out += ",\"host\":" + (lease && !lease->host.empty() ? json_string(lease->host) : "null");
  out += ",\"ownerID\":" + (lease ? json_string(lease->owner_id) : "null");
  // For a file that is not a valid record, the age of its last modification
  // (that is what the library judges it by).
  out += ",\"heartbeatAgeMs\":" + (exists ? std::to_string(to_millis(status.age)) : "null");
  return out + "}\n";
}

int print_status(const config& cfg) {
  lockfile::LockStatus status;
  try {
    status = lockfile::inspect(cfg.lock_file, lock_options(cfg));
  } catch (const std::filesystem::filesystem_error& e) {
    say(std::string("cannot inspect the lock: ") + e.what());
    return exit_lock_error;
  }
  std::fputs(status_json(cfg.lock_file, status).c_str(), stdout);
  if (std::fflush(stdout) != 0) return exit_lock_error;
  switch (status.state) {
    case lockfile::LockState::held: return exit_status_held;
    case lockfile::LockState::stale: return exit_status_stale;
    case lockfile::LockState::foreign: return exit_status_foreign;
    case lockfile::LockState::free: break;
  }
  return exit_status_free;
}

// ---------------------------------------------------------------------------
// The event pipe and the signal handlers
// ---------------------------------------------------------------------------

// One byte per event. Signal numbers are below 0x40.
constexpr unsigned char event_lease_lost = 0x40;
constexpr unsigned char event_wait_done = 0x41;
constexpr unsigned char from_terminal = 0x80;  // flag on a signal byte

constexpr int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

// Global because the signal handler needs it; set once before any handler.
int event_read_fd = -1;
int event_write_fd = -1;

// Async-signal-safe and thread-safe: one write() of one byte. The write end
// is non-blocking: should the pipe ever be full, the loop has bytes to read
// anyway, and it looks at the child after every batch.
void post_event(unsigned char event) {
  const int saved = errno;
  (void)!::write(event_write_fd, &event, 1);
  errno = saved;
}

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

struct signal_setup {
  sigset_t handled;  // the signals with our handler: blocked until the loop runs
};

// Creates the event pipe and installs the handlers, with the handled signals
// blocked in this thread. Call before the library starts any thread, so that
// its threads inherit the blocked mask and the handlers run on this thread
// only. A signal that was ignored when lockrun started stays ignored, for
// lockrun and for the command, as if the command had been started directly
// (nohup, or "&" in a non-interactive shell, ignore SIGINT and SIGHUP).
bool install_signal_handlers(signal_setup& setup) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
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
  if (::pthread_sigmask(SIG_BLOCK, &setup.handled, nullptr) != 0) return false;

  struct sigaction action {};
  action.sa_sigaction = on_signal;
  sigfillset(&action.sa_mask);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) {
    if (sigismember(&setup.handled, sig) != 1) continue;
    action.sa_flags = SA_SIGINFO | SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    if (::sigaction(sig, &action, nullptr) != 0) return false;
  }
  return true;
}

void unblock_signals(const signal_setup& setup) { ::pthread_sigmask(SIG_UNBLOCK, &setup.handled, nullptr); }

// Waits until there are events (or timeout_ms passes; -1: forever), then
// returns all that are queued.
std::string next_events(int timeout_ms = -1) {
  pollfd pfd{event_read_fd, POLLIN, 0};
  if (::poll(&pfd, 1, timeout_ms) <= 0) return {};  // EINTR: a handler wrote; read on the next call
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

// ---------------------------------------------------------------------------
// Taking the lock
// ---------------------------------------------------------------------------

// What taking the lock came to: acquired, or an exit status to leave with.
struct take_result {
  bool acquired = false;
  int exit_status = 0;
};

// Reports an exception from acquire/waiting as an exit status.
take_result failure_of(const config& cfg, std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const lockfile::lock_held_error& e) {
    if (!cfg.quiet) say(describe_holder(cfg.lock_file, e.holder()));
    return {false, cfg.conflict_exit};
  } catch (const std::filesystem::filesystem_error& e) {
    if (e.code() == lockfile::errc::retry_limit_exceeded) {
      if (!cfg.quiet) say(cfg.lock_file + " is contended: gave up reclaiming its stale lease");
      return {false, cfg.conflict_exit};
    }
    if (e.code() == lockfile::errc::not_a_lock_file) {
      // Someone's data at the path: the library left it alone, and so do we.
      say(cfg.lock_file + ": exists and is not a lock file; refusing to touch it");
      return {false, exit_lock_error};
    }
    say(std::string("cannot take the lock: ") + e.what());
    return {false, exit_lock_error};
  } catch (const std::exception& e) {
    say(std::string("cannot take the lock: ") + e.what());
    return {false, exit_os_error};
  }
}

// Waiting for the lock, on a thread of its own, so that this thread can keep
// watching for signals: SIGINT or SIGTERM while waiting cancels the wait
// (through the stop token) and lockrun exits 128+N without running COMMAND.
take_result wait_for_lock(lockfile::PIDLock& lock, const config& cfg, const signal_setup& setup) {
  std::stop_source stop;
  bool acquired = false;
  std::exception_ptr error;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // Beyond ~30 years, a deadline is as good as none (and cannot overflow).
  if (cfg.timeout_seconds && *cfg.timeout_seconds < 1e9)
    deadline = std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                   std::chrono::duration<double>(*cfg.timeout_seconds));

  std::thread waiter;  // created while the signals are blocked: it inherits that
  try {
    waiter = std::thread([&, token = stop.get_token()] {
      try {
        acquired = deadline ? lock.try_lock_until(*deadline, token) : lock.lock(token);
      } catch (...) {
        error = std::current_exception();
      }
      post_event(event_wait_done);
    });
  } catch (const std::exception& e) {
    say(std::string("cannot start waiting: ") + e.what());
    return {false, exit_os_error};
  }
  unblock_signals(setup);

  int interrupted_by = 0;
  for (bool done = false; !done;) {
    for (const char c : next_events()) {
      const auto event = static_cast<unsigned char>(c);
      if (event == event_wait_done) done = true;
      if (is_signal_event(event) && is_forwarded(signal_of(event)) && interrupted_by == 0) {
        interrupted_by = signal_of(event);
        stop.request_stop();
      }
      // A lost lease posted in between is seen by lock.held() before the spawn.
    }
  }
  waiter.join();

  if (interrupted_by != 0) {
    if (acquired) lock.unlock();
    return {false, 128 + interrupted_by};
  }
  if (error) return failure_of(cfg, error);
  if (acquired) return {true, 0};

  if (!cfg.quiet) {
    std::string message = "timed out after " + cfg.timeout_text + " s: ";
    try {
      const auto status = lock.inspect();
      message += status.state == lockfile::LockState::free ? cfg.lock_file + " was held"
                                                           : describe_holder(cfg.lock_file, status.lease);
    } catch (const std::exception&) {
      message += cfg.lock_file + " is held";
    }
    say(message);
  }
  return {false, cfg.conflict_exit};
}

take_result take_lock(lockfile::PIDLock& lock, const config& cfg, const signal_setup& setup) {
  if (cfg.wait) return wait_for_lock(lock, cfg, setup);
  // One attempt is short (bounded retries): it runs with the signals blocked,
  // and any that arrive are seen right after.
  try {
    lock.acquire();
  } catch (...) {
    unblock_signals(setup);
    return failure_of(cfg, std::current_exception());
  }
  unblock_signals(setup);
  return {true, 0};
}

// ---------------------------------------------------------------------------
// Running the command
// ---------------------------------------------------------------------------

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

// Gives up the lock at the end; a failure is reported but does not change the
// exit status (the command's outcome matters more, and the file goes stale).
void release_lock(lockfile::PIDLock& lock) {
  std::error_code ec;
  lock.release(ec);
  if (ec) say("could not remove the lock file: " + ec.message());
}

int run(const config& cfg) {
  lockfile::Options options;
  try {
    options = lock_options(cfg);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "lockrun: %s\n%s", e.message.c_str(), usage_text);
    return exit_usage;
  }
  signal_setup setup;
  if (!install_signal_handlers(setup)) {
    say(std::string("cannot set up signal handling: ") + std::strerror(errno));
    return exit_os_error;
  }
  // Runs on the library's notifier thread: only post the event.
  options.on_lease_lost = [] { post_event(event_lease_lost); };
  std::optional<lockfile::PIDLock> constructed;
  try {
    constructed.emplace(cfg.lock_file, std::move(options));
  } catch (const std::invalid_argument& e) {  // e.g. a LOCKFILE that names no file ("dir/")
    std::fprintf(stderr, "lockrun: %s\n%s", e.what(), usage_text);
    return exit_usage;
  }
  lockfile::PIDLock& lock = *constructed;

  const take_result taken = take_lock(lock, cfg, setup);
  if (!taken.acquired) return taken.exit_status;

  // A signal that arrived while we took the lock means: do not start.
  for (const char c : next_events(0)) {
    const auto event = static_cast<unsigned char>(c);
    if (is_signal_event(event) && is_forwarded(signal_of(event))) {
      release_lock(lock);
      return 128 + signal_of(event);
    }
  }
  if (!lock.held()) {
    say("lost the lease on " + cfg.lock_file + " before the command started");
    return exit_lease_lost;
  }

  pid_t child = -1;
  if (const int err = spawn_command(cfg, setup, child); err != 0) {
    say(std::string("cannot run '") + cfg.command[0] + "': " + std::strerror(err));
    release_lock(lock);
    return err == ENOENT ? exit_not_found : exit_cannot_execute;
  }
  bool lost = false;
  const int wait_status = supervise(child, cfg, lost);
  release_lock(lock);
  return exit_status_of(wait_status, lost, cfg);
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  try {
    cfg = parse_command_line(argc, argv);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "lockrun: %s\n%s", e.message.c_str(), usage_text);
    return exit_usage;
  }
  if (cfg.help) {
    std::printf("%s%s", usage_text, help_text);
    return 0;
  }
  if (cfg.version) {
    std::printf("lockrun (lockfile) %s\n", LOCKFILE_VERSION);
    return 0;
  }
  if (cfg.status) {
    try {
      (void)lock_options(cfg);
    } catch (const usage_error& e) {
      std::fprintf(stderr, "lockrun: %s\n%s", e.message.c_str(), usage_text);
      return exit_usage;
    }
    return print_status(cfg);
  }
  return run(cfg);
}
