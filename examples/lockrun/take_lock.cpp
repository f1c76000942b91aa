// Taking the lock: one attempt, or a wait that a signal can cancel.
#include "lockrun.hpp"

#include <exception>
#include <stop_token>
#include <thread>

namespace lockrun {

// ---------------------------------------------------------------------------
// Taking the lock
// ---------------------------------------------------------------------------

namespace {

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

}  // namespace

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

}  // namespace lockrun
