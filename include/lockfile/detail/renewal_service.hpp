// Heartbeat service: one thread per process renews every held lease; a second
// thread runs on_lease_lost callbacks, so a slow callback delays nobody's
// renewal. Both start with the first acquisition, and again in a forked child.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_RENEWAL_SERVICE_HPP
#define LOCKFILE_DETAIL_RENEWAL_SERVICE_HPP

namespace lockfile::detail {

// One held lease, shared between its PIDLock and the service.
struct held_lease {
  std::mutex mutex;  // orders renewal against release
  unique_fd fd;
  std::filesystem::path path;  // absolute
  file_identity identity;
  Lease lease;                 // as last written
  std::string record;          // the bytes last written
  std::size_t heartbeat_at = 0;     // offset of lastHeartbeatUnixNano's digits in record
  std::size_t heartbeat_digits = 0; // how many there are
  std::string scratch;         // read buffer, kept to spare an allocation per renewal
  std::chrono::milliseconds interval{};
  std::chrono::milliseconds stale_threshold{};
  steady_clock::time_point last_renewed;
  int owner_process = 0;         // a forked child owns nothing
  fs_path kind = fs_path::local; // network: identity is the bytes, read fresh

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
  std::atomic<bool> active{true};  // false once released or lost
  std::function<void()> on_lost;
  bool callback_cancelled = false;  // guarded by the service's notify mutex
  std::atomic<bool> loss_reported{false};  // whoever sets it runs on_lost: exactly once per loss
  bool recheck_soon = false;        // renewal thread only: the path looked gone or replaced once
};

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
  if (!held.active.load()) return renewal::renewed;  // released meanwhile: nothing to do
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
    if (write_at(held.fd.get(), std::string_view(digits, length), static_cast<off_t>(held.heartbeat_at)))
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

class heartbeat_service {
 public:
  // The service of this process. A forked child gets a fresh one: the
  // parent's threads do not exist in the child, so its service (and any
  // mutex a parent thread held at fork time) is abandoned, never touched.
  // (Callers that know their pid pass it: getpid() is a system call.)
  static heartbeat_service& instance(int pid = current_pid()) {
    static std::atomic<heartbeat_service*> current{nullptr};
    auto* service = current.load(std::memory_order_acquire);
    while (!service || service->pid_ != pid) {
      // NOLINTNEXTLINE(cppcoreguidelines-owning-memory): never deleted, threads may outlive statics
      auto* fresh = new heartbeat_service(pid);
      if (current.compare_exchange_strong(service, fresh, std::memory_order_acq_rel)) return *fresh;
      delete fresh;  // NOLINT(cppcoreguidelines-owning-memory): lost the race, never published
    }
    return *service;
  }

  // Starts renewing. Fails only when the threads cannot be started.
  std::error_code add(std::shared_ptr<held_lease> held) {
    std::lock_guard guard(mutex_);
    try {
      if (!renewer_.joinable() || !notifier_.joinable()) {
        const signals_blocked for_our_threads;
        if (!renewer_.joinable()) renewer_ = std::jthread([this](std::stop_token stop) { renew_loop(stop); });
        if (!notifier_.joinable()) notifier_ = std::jthread([this](std::stop_token stop) { notify_loop(stop); });
      }
      const auto due = steady_clock::now() + held->interval;
      leases_.push_back({std::move(held), due});
      // Wake the renewal thread only when it would otherwise look too late:
      // an acquire that follows a release (a lock taken again and again)
      // then costs no wake-up and no context switch.
      if (due >= looks_again_by_) return {};
      changed_ = true;
    } catch (const std::system_error& e) {
      return e.code();
    } catch (const std::bad_alloc&) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    wake_.notify_all();
    return {};
  }

  void remove(const held_lease* held) {
    std::lock_guard guard(mutex_);
    std::erase_if(leases_, [&](const entry& e) { return e.lease.get() == held; });
  }

  // Drops a queued callback for held, and waits for a running one to return
  // (unless called from that callback itself).
  void cancel_callbacks(held_lease* held) {
    std::unique_lock guard(notify_mutex_);
    held->callback_cancelled = true;  // a loss declared from now on queues nothing
    std::erase_if(pending_, [&](const auto& p) { return p.get() == held; });
    callback_done_.wait(guard, [&] {
      return running_ != held || std::this_thread::get_id() == notifier_id_;
    });
  }

 private:
  struct entry {
    std::shared_ptr<held_lease> lease;
    steady_clock::time_point due;
  };

  explicit heartbeat_service(int pid) : pid_(pid) {}

  void renew_loop(std::stop_token stop) {
    name_this_thread("lockfile-renew");
    std::vector<std::shared_ptr<held_lease>> due;
    std::unique_lock guard(mutex_);
    while (!stop.stop_requested()) {
      looks_again_by_ = steady_clock::time_point::min();  // awake: it will see every lease
      const auto now = steady_clock::now();
      auto next = steady_clock::time_point::max();
      due.clear();
      for (auto& e : leases_) {
        // Leases due within an eighth of their interval are renewed with
        // this batch: a little early is harmless, and 1,000 locks then cost
        // a few wake-ups per interval instead of 1,000.
        if (e.due <= now + e.lease->interval / 8) {
          due.push_back(e.lease);
          e.due += e.lease->interval;
          if (e.due <= now) e.due = now + e.lease->interval;  // woke late (paused, suspended)
        }
        next = std::min(next, e.due);
      }
      if (due.empty()) {
        const auto woken = [&] { return std::exchange(changed_, false); };
        looks_again_by_ = next;
        if (next == steady_clock::time_point::max())
          wake_.wait(guard, stop, woken);  // nothing held: sleep until a lease is added
        else
          wake_.wait_until(guard, stop, next, woken);
        continue;
      }
      guard.unlock();
      for (const auto& held : due) {
        if (renew_one(*held) == renewal::lost) declare_lost(held);
      }
      guard.lock();
      const auto after = steady_clock::now();
      std::erase_if(leases_, [](const entry& e) { return !e.lease->active.load(); });
      for (auto& e : leases_)
        if (e.lease->recheck_soon) e.due = after + std::max(e.lease->interval / 16, std::chrono::milliseconds(1));
    }
  }

  static renewal renew_one(held_lease& held) {
    auto outcome = renew(held);
    if (outcome != renewal::failed) return outcome;
    // A failed write (EIO, ESTALE, ENOSPC, a busy flock) is retried on the
    // next tick, until no renewal has succeeded for so long that another
    // process may already consider the lease stale.
    std::lock_guard guard(held.mutex);
    if (steady_clock::now() - held.last_renewed >= held.stale_threshold - held.interval)
      return renewal::lost;
    return renewal::failed;
  }

  void declare_lost(const std::shared_ptr<held_lease>& held) {
    {
      std::lock_guard guard(held->mutex);
      if (!held->active.exchange(false)) return;  // released meanwhile
      held->fd.reset();  // the file is not ours any more
    }
    if (!held->on_lost) return;
    std::lock_guard guard(notify_mutex_);
    if (held->callback_cancelled) return;  // released or destroyed meanwhile
    pending_.push_back(held);
    notify_.notify_all();
  }

  void notify_loop(std::stop_token stop) {
    name_this_thread("lockfile-notify");
    std::unique_lock guard(notify_mutex_);
    notifier_id_ = std::this_thread::get_id();
    while (notify_.wait(guard, stop, [&] { return !pending_.empty(); })) {
      auto held = std::move(pending_.front());
      pending_.pop_front();
      running_ = held.get();
      guard.unlock();
      try {
        if (!held->loss_reported.exchange(true)) held->on_lost();
      } catch (...) {
        // A callback's exception has nowhere to go on this thread.
      }
      guard.lock();
      running_ = nullptr;
      callback_done_.notify_all();
    }
  }

  const int pid_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  bool changed_ = false;
  // When the renewal thread will next look at leases_ without being woken:
  // min() while it is awake, max() while nothing is held.
  steady_clock::time_point looks_again_by_ = steady_clock::time_point::min();
  std::vector<entry> leases_;
  std::mutex notify_mutex_;
  std::condition_variable_any notify_;
  std::condition_variable_any callback_done_;
  std::deque<std::shared_ptr<held_lease>> pending_;
  const held_lease* running_ = nullptr;
  std::thread::id notifier_id_;
  std::jthread renewer_;   // declared last: stopped and joined first
  std::jthread notifier_;
};

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_RENEWAL_SERVICE_HPP
