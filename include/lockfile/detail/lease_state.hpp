// Lease states: one held lease's life, shared between its PIDLock and the
// service, as a closed set of phases with named transitions; and its renewal.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_LEASE_STATE_HPP
#define LOCKFILE_DETAIL_LEASE_STATE_HPP

namespace lockfile::detail {

// The life of one lease (one generation of one lock's ownership):
//
//   held --renewal finds it gone or taken--> lost --release()--> released
//   held --release()--> released
//   held or lost --fork(), in the child--> abandoned (the parent's, never touched)
//
// A lost lease stays lost until its PIDLock releases it: release() applies
// to the lease it was issued for, and a PIDLock whose lease is lost refuses
// to acquire anew until then, so that one thread's late release() can never
// remove the file another thread's new acquisition made.
enum class lease_phase : unsigned char { held, lost, released, abandoned };

// The phase of one lease, which moves only through these transitions.
class lease_life {
 public:
  lease_phase phase() const { return phase_.load(std::memory_order_acquire); }
  // held -> lost; false when it was not held (released meanwhile).
  bool lose() { return move(lease_phase::held, lease_phase::lost); }
  // held -> released; false when it was lost (or abandoned) first.
  bool release_held() { return move(lease_phase::held, lease_phase::released); }
  // lost -> released.
  bool release_lost() { return move(lease_phase::lost, lease_phase::released); }
  // held or lost -> abandoned: in a forked child, at the fork.
  void abandon() { phase_.store(lease_phase::abandoned, std::memory_order_release); }

 private:
  bool move(lease_phase from, lease_phase to) {
    return phase_.compare_exchange_strong(from, to, std::memory_order_acq_rel);
  }
  std::atomic<lease_phase> phase_{lease_phase::held};
};

struct held_lease final : fork_sensitive {
  held_lease() { fork_registry::instance().add(this); }
  ~held_lease() override { fork_registry::instance().remove(this); }
  held_lease(const held_lease&) = delete;
  held_lease& operator=(const held_lease&) = delete;
  held_lease(held_lease&&) = delete;
  held_lease& operator=(held_lease&&) = delete;

  lease_phase phase() const { return life.phase(); }

  // In the child, at the fork: the lease is the parent's. Its descriptor is
  // closed here, before the child's code runs; nothing in the child touches
  // the file, this lease's mutex (a parent thread may have held it) or the
  // parent's service again.
  void forget_in_child() noexcept override {
    fd.reset();
    life.abandon();
  }

  lease_life life;

  std::mutex mutex;  // orders renewal against release; never taken once abandoned
  unique_fd fd;
  std::filesystem::path path;  // absolute
  file_identity identity;      // the inode, and the device that picks the renewal worker
  Lease lease;                 // as last written
  std::uint64_t fencing_token = 0;  // lease.fencing_token, fixed at acquisition (read without the mutex)
  std::string record;          // the bytes last written
  std::size_t heartbeat_at = 0;     // offset of lastHeartbeatUnixNano's digits in record
  std::size_t heartbeat_digits = 0; // how many there are
  std::string scratch;         // read buffer, kept to spare an allocation per renewal
  std::chrono::milliseconds interval{};
  std::chrono::milliseconds stale_threshold{};
  steady_clock::time_point last_renewed;
  fs_path kind = fs_path::local; // network: identity is the bytes, read fresh
  void* worker = nullptr;        // the renewal worker of its file system (set by the service)

  void set_record(std::string bytes) {
    record = std::move(bytes);
    static constexpr std::string_view key = "\"lastHeartbeatUnixNano\":";
    const auto found = record.find(key);
    heartbeat_at = found == std::string::npos ? 0 : found + key.size();
    heartbeat_digits = 0;
    while (found != std::string::npos && heartbeat_at + heartbeat_digits < record.size() &&
           record[heartbeat_at + heartbeat_digits] >= '0' && record[heartbeat_at + heartbeat_digits] <= '9')
      ++heartbeat_digits;
  }
  std::function<void()> on_lost;
  bool callback_cancelled = false;  // guarded by the service's notify mutex
  std::atomic<bool> loss_reported{false};  // whoever sets it runs on_lost: exactly once per loss
  bool recheck_soon = false;        // renewal worker only: the path looked gone or replaced once
};

// A new lease record for this process: a fresh ownerID, heartbeat now.
inline Lease new_lease(const process_identity& self, std::chrono::milliseconds stale_threshold) {
  Lease lease;
  const auto now = std::chrono::system_clock::now();
  lease.owner_id = new_owner_id(self.pid, now);
  lease.pid = self.pid;
  lease.heartbeat = now;
  lease.host = self.host;
  lease.boot_id = self.boot_id;
  lease.pid_namespace = self.pid_namespace;
  lease.start_time = self.start_time;
  lease.stale_threshold = stale_threshold;
  return lease;
}

enum class renewal { renewed, failed, lost };

// Gone, replaced, or naming another owner. Look once more a moment later
// before declaring the loss: a network file system may answer wrongly for an
// instant.
inline renewal lost_unless_transient(held_lease& held) {
  if (held.recheck_soon) return renewal::lost;
  held.recheck_soon = true;
  return renewal::failed;
}

// Rewrites the record in place with a new heartbeat, after checking that the
// path still names our file and that it still carries our ownerID.
//
// Local file systems: three system calls (lstat, pread, pwrite); the file is
// ours when the path names our inode. Network file systems: the path is
// opened anew and read fresh, and is ours when its bytes are the record we
// last wrote (inode numbers and cached attributes decide nothing there).
//
// Renewal takes no flock. A reclaimer can only have judged this lease stale
// after it went unrenewed for the whole threshold; if the renewal lands
// between that reclaimer's check and its unlink, it writes into an inode that
// is about to be unnamed, and the next renewal finds the path gone. (On the
// network path the reclaimer moves the file aside, reads it again, and puts
// it back when this write changed it.) Holding the flock here would not
// shorten that window (held() stays true until the next tick either way),
// and would cost two system calls per heartbeat.
inline renewal renew(held_lease& held) {
  std::lock_guard guard(held.mutex);
  if (held.phase() != lease_phase::held) return renewal::renewed;  // released or lost meanwhile: nothing to do
  std::string& bytes = held.scratch;
  if (held.kind == fs_path::network) {
    auto seen = observe_file(held.path, fs_path::network);
    if (seen.error == std::errc::no_such_file_or_directory) return lost_unless_transient(held);
    if (seen.error) return renewal::failed;
    bytes = std::move(seen.bytes);
  } else {
    file_facts named;
    const auto error = stat_path(held.path, named);
    if (error && error != std::errc::no_such_file_or_directory) return renewal::failed;
    if (error || named.identity != held.identity) return lost_unless_transient(held);
    if (read_prefix(held.fd.get(), bytes, max_record_bytes)) return renewal::failed;
  }
  if (bytes != held.record) {  // rewritten by someone: still ours only if it names us
    const auto on_disk = parse_lease(bytes);
    if (!on_disk || on_disk->owner_id != held.lease.owner_id) {
      if (held.kind == fs_path::network) return lost_unless_transient(held);
      return renewal::lost;
    }
  }
  held.recheck_soon = false;

  const auto now = system_clock::now();
  char digits[24];
  auto* const end = std::to_chars(digits, digits + sizeof digits, unix_nanos(now)).ptr;
  const auto length = static_cast<std::size_t>(end - digits);
  if (bytes == held.record && length == held.heartbeat_digits) {
    // The usual case: only the heartbeat's digits change.
    if (write_at(held.fd.get(), std::string_view(digits, length), held.heartbeat_at))
      return renewal::failed;
    held.record.replace(held.heartbeat_at, length, digits, length);
  } else {
    Lease next = held.lease;
    next.heartbeat = now;
    std::string record = format_lease(next);
    if (write_at(held.fd.get(), record, 0)) return renewal::failed;
    if (record.size() < bytes.size() && truncate_to(held.fd.get(), record.size())) return renewal::failed;
    held.set_record(std::move(record));
  }
  held.lease.heartbeat = now;
  held.last_renewed = steady_clock::now();
  return renewal::renewed;
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_LEASE_STATE_HPP
