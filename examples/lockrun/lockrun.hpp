// lockrun's parts, one concern a file (see main.cpp for the whole picture):
//   command_line.cpp  options, usage and help text, the library's Options
//   status.cpp        messages, describing a holder, --status
//   events.cpp        the event pipe and the signal handlers
//   take_lock.cpp     taking the lock (one attempt or a cancellable wait)
//   run.cpp           running COMMAND under the lock
#pragma once

#include <lockfile/lockfile.hpp>

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace lockrun {

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
// Command line (command_line.cpp)
// ---------------------------------------------------------------------------
extern const char usage_text[];
extern const char help_text[];

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

config parse_command_line(int argc, char** argv);
// The library's options from ours; usage_error when they contradict.
lockfile::Options lock_options(const config& cfg);

// ---------------------------------------------------------------------------
// Messages and --status (status.cpp)
// ---------------------------------------------------------------------------
void say(const std::string& message);  // "lockrun: MESSAGE" on stderr
std::string describe_holder(const std::string& lock_file, const std::optional<lockfile::Lease>& holder);
int print_status(const config& cfg);

// ---------------------------------------------------------------------------
// The event pipe and the signal handlers (events.cpp)
// ---------------------------------------------------------------------------

// One byte per event. Signal numbers are below 0x40.
constexpr unsigned char event_lease_lost = 0x40;
constexpr unsigned char event_wait_done = 0x41;
constexpr unsigned char from_terminal = 0x80;  // flag on a signal byte

struct signal_setup {
  sigset_t handled;  // the signals with our handler: blocked until the loop runs
};

// Async-signal-safe and thread-safe.
void post_event(unsigned char event);
bool install_signal_handlers(signal_setup& setup);
void unblock_signals(const signal_setup& setup);
// Waits until there are events (or timeout_ms passes; -1: forever), then
// returns all that are queued.
std::string next_events(int timeout_ms = -1);
bool is_signal_event(unsigned char event);
int signal_of(unsigned char event);
bool is_forwarded(int sig);

// ---------------------------------------------------------------------------
// Taking the lock (take_lock.cpp)
// ---------------------------------------------------------------------------

// What taking the lock came to: acquired, or an exit status to leave with.
struct take_result {
  bool acquired = false;
  int exit_status = 0;
};

take_result take_lock(lockfile::PIDLock& lock, const config& cfg, const signal_setup& setup);

// ---------------------------------------------------------------------------
// Running the command (run.cpp)
// ---------------------------------------------------------------------------
int run(const config& cfg);

}  // namespace lockrun
