// Running COMMAND under the lock: the steps around it, on every OS (set up
// the events, take the lock, start and supervise COMMAND in child_*.cpp,
// release, exit with its status).
#include "lockrun.hpp"

namespace lockrun {

// Gives up the lock at the end; a failure is reported but does not change the
// exit status (the command's outcome matters more, and the file goes stale).
void release_lock(lockfile::PIDLock& lock) {
  std::error_code ec;
  lock.release(ec);
  if (ec) say("could not remove the lock file: " + ec.message());
}

int run(const config& cfg) {
  signal_setup setup;
  if (const auto ec = install_signal_handlers(setup)) {
    say("cannot set up signal handling: " + ec.message());
    return exit_os_error;
  }
  int exit_status = 0;
  const auto made = make_lock(cfg, exit_status);
  if (!made) return exit_status;
  lockfile::PIDLock& lock = *made;

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

  if (!cfg.fencing) {
    // An outer lockrun's token is for its lock, not this one: a command run
    // without --fencing must not take it for ours.
    clear_environment("LOCKFILE_FENCING_TOKEN");
  } else {
    std::string token;
    try {
      token = std::to_string(lock.fencing_token());
    } catch (const std::exception& e) {  // lost in between
      say(std::string("cannot give COMMAND its fencing token: ") + e.what());
      release_lock(lock);
      return exit_lease_lost;
    }
    if (const auto ec = set_environment("LOCKFILE_FENCING_TOKEN", token)) {
      say("cannot set LOCKFILE_FENCING_TOKEN: " + ec.message());
      release_lock(lock);
      return exit_os_error;
    }
    if (cfg.verbose) say("fencing token " + token);
  }
  if (cfg.verbose) say(std::string("executing ") + cfg.command[0]);
  const int exit_status_of_command = run_command(cfg, setup);
  release_lock(lock);
  return exit_status_of_command;
}

}  // namespace lockrun
