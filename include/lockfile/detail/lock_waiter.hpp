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
class lock_waiter {
 public:
  using native_handle_type = detail::native_handle;

  explicit lock_waiter(PIDLock& lock)
      : lock_(&lock), readiness_(lock.absolute_, detail::renewal_service::instance().watch()) {}

  lock_waiter(const lock_waiter&) = delete;
  lock_waiter& operator=(const lock_waiter&) = delete;

  // One attempt, as PIDLock::try_lock() (true: acquired; false: call again
  // when native_handle() is readable or at next_attempt(); hard errors
  // throw). Does not block beyond the attempt itself.
  bool try_lock() {
    readiness_.prepare();  // before the attempt: no release in between is missed
    const auto o = lock_->attempt(std::stop_token{});
    if (o.kind == PIDLock::attempt_result::acquired) {
      readiness_.disarm();
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
    readiness_.arm(next.at, std::move(next.holder_exit));
    return false;
  }

  // Readable when an attempt may succeed; -1 (POSIX) or null (Windows)
  // where there is no such descriptor. Owned by the waiter: do not close it
  // (an event loop that takes ownership gets a dup()).
  native_handle_type native_handle() const { return readiness_.fd(); }

  // When to try again at the latest, whatever the descriptor says; the
  // default (epoch) time before the first attempt and once acquired.
  std::chrono::steady_clock::time_point next_attempt() const { return next_attempt_; }

 private:
  PIDLock* lock_;
  detail::wait_descriptor readiness_;
  std::chrono::steady_clock::time_point next_attempt_{};
};

}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_LOCK_WAITER_HPP
