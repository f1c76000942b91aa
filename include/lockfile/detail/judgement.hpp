// Judging a lock file: the rules of DESIGN.md "Protocol" step 3, shared by
// acquire attempts, waiting and inspect().
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_JUDGEMENT_HPP
#define LOCKFILE_DETAIL_JUDGEMENT_HPP

namespace lockfile::detail {

using steady_clock = std::chrono::steady_clock;
using system_clock = std::chrono::system_clock;

// What one lock has seen of a lock file's bytes over time, on its own
// steady clock. It lets a waiting lock judge by observation rather than by
// another host's timestamps.
struct observation_memory {
  bool valid = false;
  bool saw_change = false;             // the bytes changed while we watched
  std::string bytes;
  steady_clock::time_point first_seen; // when the current bytes were first seen

  void record(const std::string& now_bytes, steady_clock::time_point now) {
    if (valid && now_bytes == bytes) return;
    saw_change = valid;
    valid = true;
    bytes = now_bytes;
    first_seen = now;
  }
  void forget() { *this = observation_memory{}; }
};

struct verdict {
  LockStatus status;
  // When the file, if its bytes stay as they are, becomes stale (steady time);
  // meaningful when held.
  steady_clock::time_point stale_at;
};

inline std::chrono::nanoseconds age_since(system_clock::time_point now,
                                          system_clock::time_point then) {
  return std::max(std::chrono::nanoseconds::zero(),
                  std::chrono::duration_cast<std::chrono::nanoseconds>(now - then));
}

// A record from our own boot and PID namespace names a pid we can probe.
inline bool same_pid_space(const Lease& lease, const process_identity& self) {
  return !lease.boot_id.empty() && lease.boot_id == self.boot_id && lease.pid_namespace != 0 &&
         lease.pid_namespace == self.pid_namespace;
}

inline bool owner_is_dead(const Lease& lease, const process_identity& self, const Options& options) {
  if (!same_pid_space(lease, self)) return false;
  if (options.process_appears_alive) return !options.process_appears_alive(lease.pid);
  return probe_process(lease.pid, lease.start_time) == liveness::dead;
}

inline verdict judge(const std::string& bytes, const file_facts& facts, const Options& options,
                     const observation_memory* memory, const process_identity& self) {
  using std::chrono::nanoseconds;
  const auto wall_now = system_clock::now();
  const auto steady_now = steady_clock::now();
  verdict out;
  out.status.state = LockState::held;
  if (bytes.size() <= max_record_bytes) out.status.lease = parse_lease(bytes);
  const auto& lease = out.status.lease;

  // Which threshold applies, and how old the file is by the timestamps.
  nanoseconds threshold;
  nanoseconds age;
  if (lease) {
    threshold = std::max<nanoseconds>(options.lease_stale_threshold,
                                      std::min(lease->stale_threshold, max_record_threshold));
    const bool far_future = lease->heartbeat - wall_now > threshold;
    // A heartbeat far in the future (skew, corruption) must not block forever:
    // judge by the file's modification time, which follows each renewal.
    age = age_since(wall_now, far_future ? facts.modified : lease->heartbeat);
  } else {
    threshold = options.invalid_lock_stale_threshold;
    age = age_since(wall_now, facts.modified);
  }
  out.status.age = age;

  if (lease && owner_is_dead(*lease, self, options)) {
    out.status.state = LockState::stale;
    return out;
  }
  const bool watching = memory != nullptr && memory->valid && memory->bytes == bytes;
  if (watching) {
    if (steady_now - memory->first_seen >= threshold) {  // stale by observation
      out.status.state = LockState::stale;
      return out;
    }
    out.stale_at = memory->first_seen + threshold;
    if (memory->saw_change) return out;  // alive by observation, whatever the timestamps say
  }
  if (age >= threshold) {  // the Go rule: all a single try has to go on
    out.status.state = LockState::stale;
    return out;
  }
  const auto by_timestamps = steady_now + (threshold - age);
  out.stale_at = watching ? std::min(out.stale_at, by_timestamps) : by_timestamps;
  return out;
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_JUDGEMENT_HPP
