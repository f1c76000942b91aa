// Renewal service: per file system, one worker thread renews that file
// system's leases, so that a hung mount stalls only the leases on it; one
// notifier thread runs on_lease_lost callbacks, so that a slow callback
// delays nobody's renewal. The service also owns the process's one inotify
// instance. None of it exists before the first acquisition (or wait); a
// forked child gets a service of its own.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_RENEWAL_SERVICE_HPP
#define LOCKFILE_DETAIL_RENEWAL_SERVICE_HPP

namespace lockfile::detail {

class renewal_service;

// Renews every lease on one file system (one st_dev), on a thread of its
// own, started with its first lease. A renewal that blocks (a stalled NFS
// or FUSE mount, a hung disk) blocks only this worker.
class renewal_worker {
 public:
  renewal_worker(renewal_service& service, std::uint64_t device) : service_(service), device_(device) {}
  ~renewal_worker() = default;
  renewal_worker(const renewal_worker&) = delete;
  renewal_worker& operator=(const renewal_worker&) = delete;
  renewal_worker(renewal_worker&&) = delete;
  renewal_worker& operator=(renewal_worker&&) = delete;

  std::uint64_t device() const { return device_; }

  // Starts renewing. Fails only when the thread cannot be started.
  std::error_code add(std::shared_ptr<held_lease> held) {
    std::lock_guard guard(mutex_);
    try {
      if (!thread_.joinable()) {
        const signals_blocked for_our_thread;
        thread_ = std::jthread([this](std::stop_token stop) { loop(stop); });
      }
      const auto due = steady_clock::now() + held->interval;
      leases_.push_back({std::move(held), due});
      // Wake the worker only when it would otherwise look too late: an
      // acquire that follows a release (a lock taken again and again) then
      // costs no wake-up and no context switch.
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

 private:
  struct entry {
    std::shared_ptr<held_lease> lease;
    steady_clock::time_point due;
  };

  void loop(std::stop_token stop);

  static renewal renew_one(held_lease& held) {
    auto outcome = renew(held);
    if (outcome != renewal::failed) return outcome;
    // A failed write (EIO, ESTALE, ENOSPC) is retried on the next tick,
    // until no renewal has succeeded for so long that another process may
    // already consider the lease stale.
    std::lock_guard guard(held.mutex);
    if (steady_clock::now() - held.last_renewed >= held.stale_threshold - held.interval)
      return renewal::lost;
    return renewal::failed;
  }

  renewal_service& service_;
  const std::uint64_t device_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  bool changed_ = false;
  // When the worker will next look at leases_ without being woken: min()
  // while it is awake, max() while nothing is held.
  steady_clock::time_point looks_again_by_ = steady_clock::time_point::min();
  std::vector<entry> leases_;
  std::jthread thread_;  // declared last: stopped and joined first
};

class renewal_service {
 public:
  // The service of this fork generation. A forked child gets a fresh one:
  // the parent's threads do not exist in the child, so its service (and any
  // mutex a parent thread held at the fork) is abandoned, never touched.
  // Never destroyed: its threads may outlive static objects (a static
  // PIDLock is released at exit, after other statics are gone).
  static renewal_service& instance() {
    static std::atomic<renewal_service*> current{nullptr};
    const auto generation = fork_generation();
    auto* service = current.load(std::memory_order_acquire);
    while (!service || service->generation_ != generation) {
      // NOLINTNEXTLINE(cppcoreguidelines-owning-memory): never deleted, see above
      auto* fresh = new renewal_service(generation);
      if (current.compare_exchange_strong(service, fresh, std::memory_order_acq_rel)) return *fresh;
      delete fresh;  // NOLINT(cppcoreguidelines-owning-memory): lost the race, never published
    }
    return *service;
  }

  // Starts renewing held on the worker of its file system (started on first
  // use), and the notifier. Fails only when a thread cannot be started.
  std::error_code add(const std::shared_ptr<held_lease>& held) {
    renewal_worker* worker = nullptr;
    {
      std::lock_guard guard(mutex_);
      try {
        if (!notifier_.joinable()) {
          const signals_blocked for_our_thread;
          notifier_ = std::jthread([this](std::stop_token stop) { notify_loop(stop); });
        }
        for (const auto& w : workers_)
          if (w->device() == held->identity.device) worker = w.get();
        if (!worker) worker = workers_.emplace_back(std::make_unique<renewal_worker>(*this, held->identity.device)).get();
      } catch (const std::system_error& e) {
        return e.code();
      } catch (const std::bad_alloc&) {
        return std::make_error_code(std::errc::not_enough_memory);
      }
    }
    held->worker = worker;
    return worker->add(held);
  }

  static void remove(const held_lease* held) {
    if (held->worker) static_cast<renewal_worker*>(held->worker)->remove(held);
  }

  // Drops a queued callback for held, and waits for a running one to return
  // (unless called from that callback itself). After it returns, held's
  // callback never runs.
  void cancel_callbacks(held_lease* held) {
    std::unique_lock guard(notify_mutex_);
    held->callback_cancelled = true;  // a loss declared from now on queues nothing
    std::erase_if(pending_, [&](const auto& p) { return p.get() == held; });
    callback_done_.wait(guard, [&] {
      return running_ != held || std::this_thread::get_id() == notifier_id_;
    });
  }

  // held -> lost, from a renewal worker; queues the owner's callback.
  void declare_lost(const std::shared_ptr<held_lease>& held) {
    {
      std::lock_guard guard(held->mutex);
      if (!held->life.lose()) return;  // released meanwhile
      held->fd.reset();           // the file is not ours any more
    }
    if (!held->on_lost) return;
    std::lock_guard guard(notify_mutex_);
    if (held->callback_cancelled) return;  // released or destroyed meanwhile
    pending_.push_back(held);
    notify_.notify_all();
  }

  // The process's one inotify instance, made on first use.
  directory_watch& watch() {
    std::lock_guard guard(mutex_);
    if (!watch_) watch_ = std::make_unique<directory_watch>();
    return *watch_;
  }

 private:
  explicit renewal_service(std::uint64_t generation) : generation_(generation) {}

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

  const std::uint64_t generation_;
  std::mutex mutex_;  // guards workers_ and watch_
  std::vector<std::unique_ptr<renewal_worker>> workers_;
  std::unique_ptr<directory_watch> watch_;
  std::mutex notify_mutex_;
  std::condition_variable_any notify_;
  std::condition_variable_any callback_done_;
  std::deque<std::shared_ptr<held_lease>> pending_;
  const held_lease* running_ = nullptr;
  std::thread::id notifier_id_;
  std::jthread notifier_;  // declared last: stopped and joined first
};

inline void renewal_worker::loop(std::stop_token stop) {
  name_this_thread("lockfile-renew");
  std::vector<std::shared_ptr<held_lease>> due;
  std::unique_lock guard(mutex_);
  while (!stop.stop_requested()) {
    looks_again_by_ = steady_clock::time_point::min();  // awake: it will see every lease
    const auto now = steady_clock::now();
    auto next = steady_clock::time_point::max();
    due.clear();
    for (auto& e : leases_) {
      // Leases due within an eighth of their interval are renewed with this
      // batch: a little early is harmless, and 1,000 locks then cost a few
      // wake-ups per interval instead of 1,000.
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
      if (renew_one(*held) == renewal::lost) service_.declare_lost(held);
    }
    guard.lock();
    const auto after = steady_clock::now();
    std::erase_if(leases_, [](const entry& e) { return e.lease->phase() != lease_phase::held; });
    for (auto& e : leases_)
      if (e.lease->recheck_soon) e.due = after + std::max(e.lease->interval / 16, std::chrono::milliseconds(1));
  }
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_RENEWAL_SERVICE_HPP
