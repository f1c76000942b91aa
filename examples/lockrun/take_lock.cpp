// Taking the lock: one attempt, or a wait that a signal can cancel. Quiet on
// a conflict, as flock(1); --verbose says who holds the lock, that lockrun
// waits, and how long getting the lock took.
#include "lockrun.hpp"

#include <cstdio>
#include <exception>
#include <memory>
#include <stop_token>
#include <thread>

namespace lockrun {

namespace {

using std::chrono::steady_clock;

// Reports an exception from acquire/waiting as an exit status. `context` is
// flock's --verbose wording for a conflict ("failed to get lock").
take_result failure_of(const config& cfg, std::exception_ptr error, const char* context) {
  try {
    std::rethrow_exception(error);
  } catch (const lockfile::lock_held_error& e) {
    if (cfg.verbose) say(std::string(context) + ": " + describe_holder(cfg.lock_file, e.holder()));
    return {false, cfg.conflict_exit};
  } catch (const std::filesystem::filesystem_error& e) {
    if (e.code() == lockfile::errc::retry_limit_exceeded) {
      if (cfg.verbose)
        say(std::string(context) + ": " + cfg.lock_file + " is contended: gave up reclaiming its stale lease");
      return {false, cfg.conflict_exit};
    }
    if (e.code() == lockfile::errc::not_a_lock_file) {
      // Someone's data at the path: the library left it alone, and so do we.
      say(cfg.lock_file + ": exists and is not a lock file; refusing to touch it");
      return {false, exit_lock_error};
    }
    say(std::string("cannot take the lock: ") + e.what());
    return {false, exit_status_for(e.code())};
  } catch (const std::exception& e) {
    say(std::string("cannot take the lock: ") + e.what());
    return {false, exit_os_error};
  }
}

bool is_busy(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const lockfile::lock_held_error&) {
    return true;
  } catch (const std::filesystem::filesystem_error& e) {
    return e.code() == lockfile::errc::retry_limit_exceeded;
  } catch (...) {
    return false;
  }
}

// "held by pid 42 ..." for a message, from what the lock has seen.
std::string current_holder(const lockfile::PIDLock& lock, const config& cfg) {
  try {
    const auto status = lock.inspect();
    return status.state == lockfile::LockState::free ? cfg.lock_file + " was held"
                                                     : describe_holder(cfg.lock_file, status.lease);
  } catch (const std::exception&) {
    return cfg.lock_file + " is held";
  }
}

void report_acquired(const config& cfg, steady_clock::time_point started) {
  if (!cfg.verbose) return;
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - started).count();
  char text[96];
  std::snprintf(text, sizeof text, "getting lock took %lld.%06lld seconds", static_cast<long long>(micros / 1000000),
                static_cast<long long>(micros % 1000000));
  say(text);
}

// Waiting for the lock, on a thread of its own, so that this thread can keep
// watching for signals: SIGINT or SIGTERM while waiting cancels the wait
// (through the stop token) and lockrun exits 128+N without running COMMAND.
// Readiness of one of `cancel_on` cancels it too (result: cancelled).
take_result wait_for_lock(lockfile::PIDLock& lock, const config& cfg, const signal_setup& setup,
                          std::span<watched> cancel_on, steady_clock::time_point started) {
  std::stop_source stop;
  bool acquired = false;
  std::exception_ptr error;
  std::optional<steady_clock::time_point> deadline;
  // Beyond ~30 years, a deadline is as good as none (and cannot overflow).
  if (cfg.timeout_seconds && *cfg.timeout_seconds < 1e9)
    deadline = started + std::chrono::duration_cast<steady_clock::duration>(
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
    unblock_signals(setup);
    say(std::string("cannot start waiting: ") + e.what());
    return {false, exit_os_error};
  }
  unblock_signals(setup);

  int interrupted_by = 0;
  bool cancelled = false;
  for (bool done = false; !done;) {
    const std::string events = next_events(-1, cancel_on);
    for (const auto& watched : cancel_on)
      if (watched.revents != 0 && !cancelled && interrupted_by == 0) {
        cancelled = true;
        stop.request_stop();
      }
    for (const char c : events) {
      const auto event = static_cast<unsigned char>(c);
      if (event == event_wait_done) done = true;
      if (is_signal_event(event) && is_forwarded(signal_of(event)) && interrupted_by == 0 && !cancelled) {
        interrupted_by = signal_of(event);
        stop.request_stop();
      }
      // A lost lease posted in between is seen by lock.held() before the spawn.
    }
    // Once cancelled, stop watching (a ready descriptor stays ready).
    if (cancelled) cancel_on = {};
  }
  waiter.join();

  if (interrupted_by != 0 || cancelled) {
    if (acquired) lock.unlock();
    take_result result{false, 128 + interrupted_by};
    result.cancelled = cancelled;
    return result;
  }
  if (error) return failure_of(cfg, error, "timeout while waiting to get lock");
  if (acquired) {
    report_acquired(cfg, started);
    return {true, 0};
  }
  if (cfg.verbose) say("timeout while waiting to get lock: " + current_holder(lock, cfg));
  return {false, cfg.conflict_exit};
}

}  // namespace

std::unique_ptr<lockfile::PIDLock> make_lock(const config& cfg, int& exit_status) {
  lockfile::Options options;
  try {
    options = lock_options(cfg);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "lockrun: %s\n%s", e.message.c_str(), usage_text);
    exit_status = exit_usage;
    return nullptr;
  }
  // Runs on the library's notifier thread: only post the event.
  options.on_lease_lost = [] { post_event(event_lease_lost); };
  try {
    return std::make_unique<lockfile::PIDLock>(path_of(cfg.lock_file), std::move(options));
  } catch (const std::invalid_argument& e) {  // e.g. a FILE that names no file ("dir/")
    std::fprintf(stderr, "lockrun: %s\n%s", e.what(), usage_text);
    exit_status = exit_usage;
  } catch (const std::exception& e) {
    say(std::string("cannot set up the lock: ") + e.what());
    exit_status = exit_os_error;
  }
  return nullptr;
}

take_result take_lock(lockfile::PIDLock& lock, const config& cfg, const signal_setup& setup,
                      std::span<watched> cancel_on) {
  const auto started = steady_clock::now();
  // A first attempt, short (bounded retries): it runs with the signals
  // blocked, and any that arrive are seen right after. When the lock is
  // held, it also tells --verbose who holds it before the wait begins.
  std::exception_ptr first_error;
  try {
    lock.acquire();
  } catch (...) {
    first_error = std::current_exception();
  }
  if (!first_error) {
    unblock_signals(setup);
    report_acquired(cfg, started);
    return {true, 0};
  }
  if (!is_busy(first_error) || cfg.one_attempt()) {
    unblock_signals(setup);
    return failure_of(cfg, first_error, "failed to get lock");
  }
  if (cfg.verbose) {
    std::string message;
    try {
      std::rethrow_exception(first_error);
    } catch (const lockfile::lock_held_error& e) {
      message = describe_holder(cfg.lock_file, e.holder());
    } catch (...) {
      message = current_holder(lock, cfg);
    }
    message += "; waiting";
    if (cfg.timeout_seconds) message += " at most " + cfg.timeout_text + " s";
    say(message);
  }
  return wait_for_lock(lock, cfg, setup, cancel_on, started);
}

}  // namespace lockrun
