// Judging a lock file: the rules of DESIGN.md "Protocol" step 3, shared by
// acquire attempts, waiting and inspect().
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_JUDGEMENT_HPP
#define LOCKFILE_DETAIL_JUDGEMENT_HPP

namespace lockfile::detail {

using steady_clock = std::chrono::steady_clock;
using system_clock = std::chrono::system_clock;

// What one lock has seen of a lock file over time, on its own steady
// clock. It lets a waiting lock judge by observation rather than by another
// host's timestamps. A version of the file is its identity, its ctime and
// its bytes: the same bytes in another file, or written again (the Go
// package truncates and rewrites, so "" recurs), are not "unchanged".
struct observation_memory {
  bool valid = false;
  bool saw_change = false;             // the file changed while we watched
  std::string bytes;
  file_identity identity;
  system_clock::time_point changed;    // ctime
  steady_clock::time_point first_seen; // when this version was first seen

  bool same(const std::string& now_bytes, const file_facts& facts) const {
    return valid && facts.identity == identity && facts.changed == changed && now_bytes == bytes;
  }
  void record(const std::string& now_bytes, const file_facts& facts, steady_clock::time_point now) {
    if (same(now_bytes, facts)) return;
    saw_change = valid;
    valid = true;
    bytes = now_bytes;
    identity = facts.identity;
    changed = facts.changed;
    first_seen = now;
  }
  void forget() { *this = observation_memory{}; }
};

struct verdict {
  LockStatus status;
  // When the file, if it stays as it is, becomes stale (steady time);
  // meaningful when held.
  steady_clock::time_point stale_at;
  std::string note;  // for the held error: why a live owner was assumed
};

// now - then, never negative, saturating (times come from files and records).
inline std::chrono::nanoseconds age_since(system_clock::time_point now, system_clock::time_point then) {
  const std::int64_t n = unix_nanos(now);
  const std::int64_t t = unix_nanos(then);
  if (t >= n) return std::chrono::nanoseconds::zero();
  if (t < 0 && n > std::numeric_limits<std::int64_t>::max() + t) return std::chrono::nanoseconds::max();
  return std::chrono::nanoseconds(n - t);
}

// A record from our own boot and PID namespace names a pid we can probe.
inline bool same_pid_space(const Lease& lease, const process_identity& self) {
  return !lease.boot_id.empty() && lease.boot_id == self.boot_id && lease.pid_namespace != 0 &&
         lease.pid_namespace == self.pid_namespace;
}

// Fails closed: an exception from process_appears_alive means alive, and is
// reported in note (it ends up in the held error's message).
inline bool owner_is_dead(const Lease& lease, const process_identity& self, const Options& options,
                          std::string& note) {
  if (!same_pid_space(lease, self)) return false;
  if (!options.process_appears_alive) return probe_process(lease.pid, lease.start_time) == liveness::dead;
  try {
    return !options.process_appears_alive(lease.pid);
  } catch (const std::exception& e) {
    note = std::string(" (process_appears_alive threw: ") + e.what() + "; the owner is taken to be alive)";
  } catch (...) {
    note = " (process_appears_alive threw; the owner is taken to be alive)";
  }
  return false;
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

  // Which threshold applies, and how old the file is by the timestamps. A
  // time far in the future (skew, corruption, touch -d) must not block for
  // ever: a heartbeat so far ahead is replaced by the file's mtime (each
  // renewal writes the file), an mtime so far ahead by its ctime, which no
  // writer can set.
  nanoseconds threshold;
  nanoseconds age;
  const auto far_ahead = [&](system_clock::time_point when) { return when > wall_now + threshold; };
  const auto file_time = [&] { return far_ahead(facts.modified) ? facts.changed : facts.modified; };
  if (lease) {
    threshold = std::max<nanoseconds>(options.lease_stale_threshold,
                                      std::min(lease->stale_threshold, max_record_threshold));
    age = age_since(wall_now, far_ahead(lease->heartbeat) ? file_time() : lease->heartbeat);
  } else {
    threshold = options.invalid_lock_stale_threshold;
    age = age_since(wall_now, file_time());
  }
  out.status.age = age;

  // Somebody's data, not a lease: never stale, never touched.
  if (!lease && classify_non_record(bytes) == lock_bytes::foreign) {
    out.status.state = LockState::foreign;
    return out;
  }
  if (lease && owner_is_dead(*lease, self, options, out.note)) {
    out.status.state = LockState::stale;
    return out;
  }
  const bool watching = memory != nullptr && memory->same(bytes, facts);
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
