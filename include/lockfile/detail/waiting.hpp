// Waiting: when a waiting lock tries again, and what it sleeps on until then
// (DESIGN.md "Waiting"). The sleeping itself is the platform's wait_channel.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_WAITING_HPP
#define LOCKFILE_DETAIL_WAITING_HPP

namespace lockfile::detail {

// How long a waiting lock sleeps between attempts when nothing wakes it
// sooner (a remote host's release raises no local event), with jitter so
// that waiters do not retry in lockstep.
inline std::chrono::steady_clock::duration poll_period() {
  thread_local std::minstd_rand jitter{std::random_device{}()};
  return std::chrono::milliseconds(50) + std::chrono::microseconds(jitter() % 25000);
}

// One waiting call on a channel, from its first attempt to its return.
class waiting_call {
 public:
  explicit waiting_call(wait_channel& channel) : channel_(channel) { channel_.enter(); }
  ~waiting_call() { channel_.leave(); }
  waiting_call(const waiting_call&) = delete;
  waiting_call& operator=(const waiting_call&) = delete;

 private:
  wait_channel& channel_;
};

// The next attempt of a waiting lock, and the holder's exit to wake it
// sooner where this machine can see that process.
struct next_attempt {
  steady_clock_time at;
  unique_fd holder_exit;
};

// After an attempt that did not acquire: the earliest of the deadline, the
// poll period, and, when a live holder was found (held), the moment its
// file turns stale if nothing renews it; after a pass that ran out of
// reclamation retries (raced), the retry delay. A release on this machine
// wakes the waiter sooner through its directory watch, a holder's exit
// through holder_exit.
inline next_attempt plan_next_attempt(steady_clock_time now, steady_clock_time deadline, const verdict* held,
                                      bool raced, std::chrono::steady_clock::duration retry_delay,
                                      const process_identity& self) {
  next_attempt next;
  next.at = std::min(deadline, now + poll_period());
  if (held) {
    if (held->stale_at > now) next.at = std::min(next.at, held->stale_at);
    const auto& lease = held->status.lease;
    if (lease && same_pid_space(*lease, self)) next.holder_exit = open_holder_exit_fd(lease->pid, lease->start_time);
  } else if (raced) {
    next.at = std::min(next.at, now + retry_delay);
  }
  return next;
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_WAITING_HPP
