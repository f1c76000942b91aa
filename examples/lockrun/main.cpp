// lockrun: run a command while holding a lockfile lease lock; a drop-in for
// flock(1) (util-linux) where leases allow it.
//
//   lockrun [OPTIONS] FILE COMMAND [ARG...]
//   lockrun [OPTIONS] FILE -c 'COMMAND STRING'
//   lockrun [OPTIONS] --hold FILE        ...  lockrun --release FILE
//   lockrun --status|--holder [--stale SECONDS] FILE
//
// Takes the lock (waiting by default, as flock; -n gives up at once, -w
// after so many seconds, exiting with -E's code, default 1), runs COMMAND as
// a child, passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to it, releases the
// lock when it exits and exits with its status (128+N when it died of signal
// N). When the lease is lost while the command runs (the file was deleted or
// replaced, or lockrun was paused past the stale threshold and someone took
// over), the command is stopped (--on-lost). flock's options keep flock's
// meaning; what a lease cannot do (-s shared, -u unlock, -F no fork, a
// descriptor number as FILE) is refused with exit 64. A directory as FILE
// is locked through DIR/.lockrun.lock. `lockrun --help` lists the options
// and exit statuses; README.md ("Command line: lockrun") has the table of
// flock forms.
//
// The parts (lockrun.hpp lists them): command_line.cpp, status.cpp,
// take_lock.cpp and run.cpp on every OS; system, events, process, child and
// hold in a file per OS (*_posix.cpp, *_windows.cpp; hold_posix.cpp starts
// a background holder for the calling shell, see there).
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
//   - On Windows (the *_windows.cpp files) the same loop waits on an event
//     object instead of a pipe, console control events stand in for
//     signals, and the command runs in a kill-on-close job object instead
//     of under PR_SET_PDEATHSIG; see child_windows.cpp and events_windows.cpp.
#include "lockrun.hpp"

#include <cstdio>

using namespace lockrun;

int main(int raw_argc, char** raw_argv) {
  // UTF-8 on every OS (Windows: from the wide command line).
  std::vector<char*> arguments = utf8_arguments(raw_argc, raw_argv);
  const int argc = static_cast<int>(arguments.size());
  arguments.push_back(nullptr);
  char** const argv = arguments.data();
  config cfg;
  try {
    cfg = parse_command_line(argc, argv);
    (void)lock_options(cfg);  // --stale and --heartbeat must agree, in every mode
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
  resolve_lock_file(cfg);
  try {
    // A FILE that names no file ("dir/") is bad usage in every mode; the
    // library says why, in terms of the path as given.
    const lockfile::PIDLock probe(path_of(cfg.lock_file), lock_options(cfg));
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "lockrun: %s\n%s", e.what(), usage_text);
    return exit_usage;
  }
  switch (cfg.what) {
    case mode::status: return print_status(cfg);
    case mode::holder: return print_holder(cfg);
    case mode::hold: return cfg.hold_for ? hold_in_background(cfg) : hold(cfg, argc, argv);
    case mode::release: return release(cfg);
    case mode::run: break;
  }
  return run(cfg);
}
