// lockrun's parts, one concern a file (see main.cpp for the whole picture).
// Shared by every OS:
//   command_line.cpp  options, usage and help text, the library's Options
//   status.cpp        messages, describing a holder, --status
//   take_lock.cpp     taking the lock (one attempt or a cancellable wait)
//   run.cpp           running COMMAND under the lock: the steps around it
// One file per OS (_posix.cpp or _windows.cpp, chosen by CMake), as the
// library's platform files:
//   system_*.cpp      arguments, paths, the shell of -c, exit statuses of errors
//   events_*.cpp      the event queue, and signals (POSIX) or console control
//                     events (Windows)
//   process_*.cpp     what the system says of other processes
//   child_*.cpp       starting COMMAND and supervising it until it exits
//   hold_*.cpp        --hold (a background holder for the calling shell), --release
#pragma once

#include <lockfile/lockfile.hpp>

#if defined(_WIN32)
#include <sys/types.h>  // pid_t (<windows.h> comes with lockfile.hpp)
#else
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#endif

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace lockrun {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------
// The two OS types the shared parts pass around (the one #if of the parts
// that every OS shares; the rest lives in the _posix/_windows files).
// ---------------------------------------------------------------------------
#if defined(_WIN32)
// UTF-16 from Win32 as UTF-8, and back (system_windows.cpp).
std::string utf8_of(std::wstring_view text);
std::wstring wide_of(std::string_view text);

// A handle next_events waits on beside the event queue; revents != 0 when
// it was signalled.
struct watched {
  HANDLE handle = nullptr;
  short revents = 0;
};
// Console control events need nothing blocked.
struct signal_setup {};
#else
using watched = pollfd;  // a descriptor next_events polls beside the event pipe
struct signal_setup {
  sigset_t handled;  // the signals with our handler: blocked until the loop runs
};
#endif

// ---------------------------------------------------------------------------
// Exit statuses: flock(1)'s where it has one (1 for a conflict, sysexits.h
// values for errors), the shell's for a command that cannot run.
// ---------------------------------------------------------------------------
constexpr int exit_conflict = 1;          // default of -E, as flock(1)
constexpr int exit_status_free = 0;       // --status / --holder: free
constexpr int exit_status_held = 1;       // --status / --holder: held
constexpr int exit_status_stale = 2;      // --status / --holder: stale
constexpr int exit_status_foreign = 3;    // --status / --holder: a file that is not a lock is at the path
constexpr int exit_not_held = 1;          // --release: not held by a --hold of this caller
constexpr int exit_usage = 64;            // EX_USAGE, as flock(1)
constexpr int exit_cannot_open = 66;      // EX_NOINPUT, as flock(1): the lock file cannot be opened
constexpr int exit_os_error = 71;         // EX_OSERR, as flock(1): no memory, descriptors, fork, thread
constexpr int exit_cannot_create = 73;    // EX_CANTCREAT, as flock(1): read-only file system, no space
constexpr int exit_lock_error = 74;       // EX_IOERR: not a lock file (left alone), or an I/O error
constexpr int exit_lease_lost = 76;       // the lease was lost while the command ran
constexpr int exit_cannot_execute = 126;  // as the shell: found but not executable
constexpr int exit_not_found = 127;       // as the shell: not found

// ---------------------------------------------------------------------------
// Command line (command_line.cpp)
// ---------------------------------------------------------------------------
extern const char usage_text[];
extern const char help_text[];

enum class lost_action { term, kill, ignore };

// What lockrun was asked to do.
enum class mode {
  run,          // FILE COMMAND, FILE -c STRING
  status,       // --status FILE
  holder,       // --holder FILE
  hold,         // --hold FILE
  release,      // --release FILE
};

// The lock file used for a directory given as FILE (flock(1) locks the
// directory itself; a lease needs a file of its own).
constexpr const char directory_lock_name[] = ".lockrun.lock";

struct config {
  bool help = false;
  bool version = false;
  mode what = mode::run;
  bool nonblock = false;                  // -n; also -w 0
  std::optional<double> timeout_seconds;  // -w
  std::string timeout_text;               // as given, for messages
  bool verbose = false;                   // --verbose (-q turns it off again)
  std::optional<milliseconds> stale;
  std::optional<milliseconds> heartbeat;
  int conflict_exit = exit_conflict;
  lost_action on_lost = lost_action::term;
  bool on_lost_given = false;         // --on-lost or --kill-after given
  milliseconds kill_after = 5s;       // --on-lost term: SIGKILL this long after SIGTERM
  std::string kill_after_text = "5";  // as given, for messages
  bool fencing = false;               // --fencing: COMMAND gets LOCKFILE_FENCING_TOKEN
  std::string lock_file;              // FILE, or FILE/.lockrun.lock (see resolve_lock_file)
  std::vector<char*> command;         // argv for the command, null-terminated
  const char* command_string = nullptr;  // -c STRING (Windows passes it to cmd.exe as it is)
  // --hold-for=PID:START: set only in the background holder that --hold
  // starts (hold_posix.cpp), naming the process it holds the lock for.
  std::optional<std::pair<pid_t, unsigned long long>> hold_for;

  // One attempt only: -n, or -w 0 (as flock).
  bool one_attempt() const { return nonblock || (timeout_seconds && *timeout_seconds <= 0); }
};

struct usage_error {
  std::string message;
};

config parse_command_line(int argc, char** argv);
// The library's options from ours; usage_error when they contradict.
lockfile::Options lock_options(const config& cfg);
// A directory as FILE means FILE/.lockrun.lock; says so with --verbose.
void resolve_lock_file(config& cfg);

// ---------------------------------------------------------------------------
// The system's names and codes (system_posix.cpp, system_windows.cpp)
// ---------------------------------------------------------------------------

// The arguments as UTF-8 (Windows: from the wide command line; POSIX: as
// given). The strings live as long as the process.
std::vector<char*> utf8_arguments(int argc, char** argv);
// A path from FILE as given (UTF-8 on Windows, bytes on POSIX), and back.
std::filesystem::path path_of(const std::string& text);
std::string text_of(const std::filesystem::path& path);
// The command for -c STRING: $SHELL -c STRING (POSIX, as flock(1)), or
// cmd.exe /d /s /c STRING (Windows).
std::vector<char*> shell_command(char* string);
// Sets a variable of the environment COMMAND starts with (and lockrun's own,
// which nothing else reads); the error when the system refused.
std::error_code set_environment(const char* name, const std::string& value);
// Removes a variable from that environment (nothing when it is not set).
void clear_environment(const char* name);
// Exit status for an error of the library or the system, as flock(1) maps
// them: 71 no resources, 73 cannot create, 74 not a lock file or I/O
// error, 66 anything else that keeps the lock file from being opened.
int exit_status_for(const std::error_code& ec);

// ---------------------------------------------------------------------------
// Messages and --status (status.cpp)
// ---------------------------------------------------------------------------
void say(const std::string& message);  // "lockrun: MESSAGE" on stderr
// "FILE is held by pid 42 (sleep 60) on host h, last heartbeat 80 ms ago"
std::string describe_holder(const std::string& lock_file, const std::optional<lockfile::Lease>& holder);
int print_status(const config& cfg);  // --status
int print_holder(const config& cfg);  // --holder

// ---------------------------------------------------------------------------
// Other processes (process_posix.cpp, process_windows.cpp)
// ---------------------------------------------------------------------------
struct process_info {
  char state = '?';                // R, S, Z, ...
  pid_t parent = 0;
  unsigned long long start_time = 0;  // clock ticks after boot, as the library records it
};
std::optional<process_info> read_process(pid_t pid);
// Running (not a zombie), and the same process when start_time is not 0.
bool is_running(pid_t pid, unsigned long long start_time);
std::vector<std::string> command_line_of(pid_t pid);
// Written on this machine, in our PID namespace: its pid is one we can see.
bool lease_is_local(const lockfile::Lease& lease);
#if !defined(_WIN32)
int open_pidfd(pid_t pid);  // -1 (errno set) where there are no pidfds
// pidfd_send_signal where there is one, else kill().
bool signal_pidfd(int pidfd, pid_t pid, int sig);
#endif

// ---------------------------------------------------------------------------
// The event queue, and signals or console control events (events_posix.cpp:
// a self-pipe and signal handlers; events_windows.cpp: a queue, an event
// object and a console control handler)
// ---------------------------------------------------------------------------

// One byte per event. Signal numbers (Windows: the console event's, as
// <signal.h> numbers them: SIGINT for Ctrl-C, SIGBREAK for Ctrl-Break) are
// below 0x40.
constexpr unsigned char event_lease_lost = 0x40;
constexpr unsigned char event_wait_done = 0x41;
constexpr unsigned char from_terminal = 0x80;  // flag on a signal byte: the terminal (console) sent it to all

// Async-signal-safe and thread-safe.
void post_event(unsigned char event);
// Sets up the queue and the handlers; the error when that failed.
std::error_code install_signal_handlers(signal_setup& setup);
void unblock_signals(const signal_setup& setup);
// Waits until there are events (or timeout_ms passes; -1: forever), then
// returns all that are queued. Also returns when one of `ready_on` (waited
// on alongside) is ready, whose revents it leaves set.
std::string next_events(int timeout_ms = -1, std::span<watched> ready_on = {});
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
  bool cancelled = false;  // one of cancel_on became ready while waiting
};

// Takes the lock as the options say: one attempt (-n, -w 0), a wait of at
// most -w seconds, or a wait as long as it takes, which a forwarded signal
// (exit 128+N) or readiness of any of `cancel_on` cancels. Unblocks the
// signals of `setup`. Reports with --verbose.
take_result take_lock(lockfile::PIDLock& lock, const config& cfg, const signal_setup& setup,
                      std::span<watched> cancel_on = {});
// The lock for cfg.lock_file, its lost lease posted as event_lease_lost;
// null after reporting bad options (exit_status 64) or another failure.
std::unique_ptr<lockfile::PIDLock> make_lock(const config& cfg, int& exit_status);

// ---------------------------------------------------------------------------
// Running the command (run.cpp; the child itself: child_posix.cpp,
// child_windows.cpp)
// ---------------------------------------------------------------------------
int run(const config& cfg);
// Gives up the lock at the end; a failure is reported, not fatal.
void release_lock(lockfile::PIDLock& lock);
// Starts COMMAND and supervises it until it exits: passes signals on, acts
// on a lost lease (cfg.on_lost). Returns lockrun's exit status: COMMAND's,
// 76 after a lost lease, or 126/127/71 (after saying why) when it could not
// be started. Must run on the main thread.
int run_command(const config& cfg, const signal_setup& setup);

// ---------------------------------------------------------------------------
// --hold and --release (hold_posix.cpp; hold_windows.cpp refuses them)
// ---------------------------------------------------------------------------
int hold(const config& cfg, int argc, char** argv);  // the foreground part
int hold_in_background(const config& cfg);          // the holder it starts
int release(const config& cfg);
// For a record written by a --hold background holder: the pid and start
// time of the process it holds the lock for.
std::optional<std::pair<pid_t, unsigned long long>> hold_target_of(const lockfile::Lease& lease);

}  // namespace lockrun
