// lock_waiter: waiting for a PIDLock from an event loop (epoll, asio,
// libuv) instead of a blocked thread (DESIGN.md "Waiting").
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_LOCK_WAITER_HPP
#define LOCKFILE_DETAIL_LOCK_WAITER_HPP

namespace lockfile {

// Waits for a lock without a thread: each try_lock() is one attempt that,
// when it does not acquire, plans the next as lock() would (the release of
// the lock file, the holder's exit, the moment its lease turns stale, the
// poll period with jitter) and arms native_handle() for it:
//
//   lockfile::lock_waiter waiter(lock);
//   while (!waiter.try_lock())
//     wait until native_handle() is readable, or until next_attempt();
//
// On Linux native_handle() is one descriptor (an epoll set), readable when
// an attempt may succeed; the event loop watches it (asio:
// posix::stream_descriptor::async_wait; examples/asio_wait.cpp). Where
// there is none (other POSIX systems and Windows: native_handle() is -1 or
// null), a timer at next_attempt() is the fallback, and then a release is
// seen a poll period late at worst.
//
// Not thread-safe (one event loop drives it); the lock must outlive it.
// Once try_lock() returned true the lock is held and the waiter is done.
// After a fork the child's waiter makes itself a new descriptor.
class lock_waiter {
 public:
  using native_handle_type = detail::native_handle;

  explicit lock_waiter(PIDLock& lock) : lock_(&lock), readiness_(make_readiness()) {}

  ~lock_waiter() = default;
  lock_waiter(const lock_waiter&) = delete;
  lock_waiter& operator=(const lock_waiter&) = delete;
  lock_waiter(lock_waiter&&) = delete;
  lock_waiter& operator=(lock_waiter&&) = delete;

  // One attempt, as PIDLock::try_lock(): true when the lock is held (by
  // this attempt, or already by this PIDLock); false: call again when
  // native_handle() is readable or at next_attempt(). Hard errors throw.
  // It never sleeps: a reclamation that meets another one in progress is
  // planned for the retry delay instead of waited out. A wake-up that
  // concerned other names only costs no attempt.
  bool try_lock() {
    if (readiness_->forgotten()) readiness_ = make_readiness();  // in a child forked since
    if (!readiness_->prepare()) return false;  // still armed for the same plan
    const auto o = lock_->attempt(std::stop_token{}, nullptr, PIDLock::retry_pause::none);
    if (o.kind == PIDLock::attempt_result::acquired || o.kind == PIDLock::attempt_result::self_held) {
      readiness_->disarm();
      next_attempt_ = {};
      return true;
    }
    if (o.kind == PIDLock::attempt_result::failed) lock_->throw_failure(o);
    const auto now = std::chrono::steady_clock::now();
    auto next = detail::plan_next_attempt(now, std::chrono::steady_clock::time_point::max(),
                                          o.kind == PIDLock::attempt_result::held ? &o.verdict : nullptr,
                                          o.kind == PIDLock::attempt_result::retry_limit,
                                          lock_->options_.acquire_retry_delay, detail::self_identity());
    next_attempt_ = next.at;
    readiness_->arm(next.at, std::move(next.holder_exit));
    return false;
  }

  // Readable when an attempt may succeed; -1 (POSIX) or null (Windows)
  // where there is no such descriptor. Owned by the waiter: do not close it
  // (an event loop that takes ownership gets a duplicate, made with
  // F_DUPFD_CLOEXEC). In a child forked since it was taken it is not this
  // waiter's any more: take it again after the next try_lock().
  native_handle_type native_handle() const { return readiness_->fd(); }

  // When to try again at the latest, whatever the descriptor says; the
  // default (epoch) time before the first attempt and once acquired.
  std::chrono::steady_clock::time_point next_attempt() const { return next_attempt_; }

 private:
  std::unique_ptr<detail::wait_descriptor> make_readiness() const {
    return std::make_unique<detail::wait_descriptor>(lock_->absolute_, detail::renewal_service::instance().watch());
  }

  PIDLock* lock_;
  std::unique_ptr<detail::wait_descriptor> readiness_;
  std::chrono::steady_clock::time_point next_attempt_{};
};

}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_LOCK_WAITER_HPP
