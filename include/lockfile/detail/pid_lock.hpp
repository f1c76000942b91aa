// PIDLock: acquire, release and waiting, built on the pieces above.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_PID_LOCK_HPP
#define LOCKFILE_DETAIL_PID_LOCK_HPP

namespace lockfile {

LockStatus inspect(const std::filesystem::path& lock_file, const Options& options = {});

class lock_waiter;

class PIDLock {
 public:
  explicit PIDLock(std::filesystem::path lock_file, Options options = {})
      : path_(std::move(lock_file)), options_(std::move(options)) {
    detail::validate(path_, options_);
    // Absolute, so that a chdir() does not move the lock; not normalized,
    // since "link/../x" means what the kernel makes of it.
    absolute_ = std::filesystem::absolute(path_);
    if (!options_.held_error) options_.held_error = make_error_code(errc::lock_held);
    // The fork handlers exist before any member can hold a mutex across a
    // fork by another thread.
    (void)detail::fork_registry::instance();
  }

  PIDLock(const PIDLock&) = delete;
  PIDLock& operator=(const PIDLock&) = delete;

  // Releases if held; never throws. (An on_lease_lost callback running at
  // this moment may re-acquire; that acquisition is released too.)
  // Every lease this object held has its callback cancelled (a running one
  // is awaited) before the destructor returns.
  ~PIDLock() {
    std::error_code ignored;
    for (int pass = 0; pass < 3 && has_lease(); ++pass) release(ignored);
  }

  const std::filesystem::path& path() const noexcept { return path_; }

  // One attempt, with bounded reclamation retries. Throws lock_held_error
  // when a live owner holds the lock, filesystem_error otherwise (with
  // errc::retry_limit_exceeded when reclamation kept racing).
  void acquire() {
    const auto outcome = attempt(std::stop_token{});
    if (outcome.kind != attempt_result::acquired) throw_failure(outcome);
  }

  void acquire(std::error_code& ec) noexcept {
    ec.clear();
    try {
      const auto outcome = attempt(std::stop_token{});
      if (outcome.kind != attempt_result::acquired) ec = error_of(outcome);
    } catch (...) {
      ec = code_of_current_exception();
    }
  }

  // Removes the lock file if it is still ours. A no-op on disk when not
  // held, after the lease was lost (it ends the lost state, so that acquire()
  // may start anew), and in a forked child (the parent's file stays).
  void release() {
    std::error_code ec;
    const std::string operation = release_impl(ec);
    if (ec) throw std::filesystem::filesystem_error(operation, path_, ec);
  }

  void release(std::error_code& ec) noexcept {
    try {
      release_impl(ec);
    } catch (...) {
      ec = code_of_current_exception();
    }
  }

  bool held() const noexcept {
    std::lock_guard guard(state_mutex_);
    return state_locked() == lock_state::held;
  }

  // Lockable and TimedLockable, so std::unique_lock, std::scoped_lock and
  // std::lock_guard work. The waiting calls throw on hard errors (EACCES,
  // ELOOP, a directory at the path) instead of waiting.
  void lock() { (void)wait_until(forever(), std::stop_token{}); }

  // False when held by another (or by this object), or when reclamation
  // kept racing.
  bool try_lock() {
    const auto outcome = attempt(std::stop_token{});
    if (outcome.kind == attempt_result::failed) throw_failure(outcome);
    return outcome.kind == attempt_result::acquired;
  }

  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(steady_deadline_after(std::chrono::duration<double>(timeout)), std::stop_token{});
  }

  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return try_lock_until(deadline, std::stop_token{});
  }

  // Never throws (the standard lock types call it from destructors): a
  // release that fails leaves the file to go stale. Call release() to see
  // the error.
  void unlock() noexcept {
    std::error_code ignored;
    release(ignored);
  }

  // Cancellable waits: false as soon as stop is requested.
  bool lock(std::stop_token stop) { return wait_until(forever(), stop); }

  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token stop) {
    // Converted once to steady time, so that setting the wall clock does not
    // stretch or cut a wait; in floating point, so that time_point::max()
    // and min() cannot overflow.
    using seconds = std::chrono::duration<double>;
    const auto remaining = seconds(deadline.time_since_epoch()) - seconds(Clock::now().time_since_epoch());
    return wait_until(steady_deadline_after(remaining), stop);
  }

  // The lock file's state, judged as an acquire attempt by this lock would
  // judge it. Changes nothing.
  LockStatus inspect() const {
    std::lock_guard guard(op_mutex_);
    auto seen = detail::observe_settled(absolute_, file_system());
    if (seen.error == std::errc::no_such_file_or_directory) return {};
    if (seen.error) throw std::filesystem::filesystem_error(seen.operation, path_, seen.error);
    return detail::judge(seen.bytes, seen.facts, options_, &memory_, detail::self_identity()).status;
  }

  // The fencing token of the acquisition that holds the lock (with
  // Options::fencing): greater than every token handed out for this path
  // before. Pass it to every resource the lock protects, which should
  // reject a token lower than the highest it has seen. Throws when not held
  // (errc::lease_lost once the lease was lost) or when fencing is off.
  std::uint64_t fencing_token() const {
    const auto refuse = [this](const char* why, std::error_code ec) {
      throw std::filesystem::filesystem_error(std::string("fencing token: ") + why, path_, ec);
    };
    if (!options_.fencing)
      refuse("Options::fencing is off for this lock", std::make_error_code(std::errc::operation_not_supported));
    std::lock_guard guard(state_mutex_);
    switch (state_locked()) {
      case lock_state::held:
        return lease_->fencing_token;
      case lock_state::lost:
        refuse("the lease was lost", make_error_code(errc::lease_lost));
        break;
      case lock_state::idle:
      case lock_state::abandoned:
        break;
    }
    refuse("this PIDLock does not hold the lock", std::make_error_code(std::errc::operation_not_permitted));
    return 0;  // not reached
  }

 private:
  friend class lock_waiter;  // its attempts are this lock's, planned as wait_until plans

  // This object's view of its current lease (detail::lease_phase): none, or
  // the phase of the one it was issued last and has not released.
  enum class lock_state { idle, held, lost, abandoned };

  lock_state state_locked() const {
    if (!lease_) return lock_state::idle;
    switch (lease_->phase()) {
      case detail::lease_phase::held: return lock_state::held;
      case detail::lease_phase::lost: return lock_state::lost;
      case detail::lease_phase::abandoned: return lock_state::abandoned;
      case detail::lease_phase::released: break;
    }
    return lock_state::idle;
  }

  // In a forked child the parent's lease is not ours: forget it without
  // touching the file, the parent's service, or the lease's mutex (a parent
  // thread may have held it at the fork), so the lease is deliberately
  // leaked. Its descriptor was closed at the fork.
  void forget_abandoned_locked() {
    // NOLINTNEXTLINE(cppcoreguidelines-owning-memory): leaked on purpose, see above
    (void)new std::shared_ptr<detail::held_lease>(std::move(lease_));
  }

  enum class attempt_result { acquired, held, self_held, retry_limit, failed };

  struct attempt_outcome {
    attempt_result kind = attempt_result::failed;
    std::error_code error;        // when failed
    std::string operation;        // when failed
    std::filesystem::path subject;  // when failed on another path than the lock file's
    detail::verdict verdict;      // when held
  };

  using removal = detail::removal;
  static constexpr int max_vanished_passes = detail::max_vanished_passes;

  static std::chrono::steady_clock::time_point forever() {
    return std::chrono::steady_clock::time_point::max();
  }

  // now + timeout, saturating: a timeout of a century or more never ends,
  // and a negative one allows a single attempt.
  static std::chrono::steady_clock::time_point steady_deadline_after(std::chrono::duration<double> timeout) {
    const auto now = std::chrono::steady_clock::now();
    if (!(timeout > std::chrono::duration<double>::zero())) return now;
    if (timeout > std::chrono::hours(24 * 365 * 100)) return forever();
    return now + std::chrono::ceil<std::chrono::steady_clock::duration>(timeout);
  }

  // For the noexcept members: what an exception escaping the internals (a
  // throwing process_appears_alive, std::random_device, an allocation) means.
  static std::error_code code_of_current_exception() noexcept {
    try {
      throw;
    } catch (const std::system_error& e) {
      return e.code();
    } catch (const std::bad_alloc&) {
      return std::make_error_code(std::errc::not_enough_memory);
    } catch (...) {
      return std::make_error_code(std::errc::state_not_recoverable);
    }
  }

  static attempt_outcome with(attempt_result kind) {
    attempt_outcome o;
    o.kind = kind;
    return o;
  }

  static attempt_outcome failure(std::string operation, std::error_code ec) {
    attempt_outcome o;
    o.operation = std::move(operation);
    o.error = ec;
    return o;
  }

  std::error_code error_of(const attempt_outcome& o) const {
    switch (o.kind) {
      case attempt_result::held: return options_.held_error;
      case attempt_result::self_held: return std::make_error_code(std::errc::resource_deadlock_would_occur);
      case attempt_result::retry_limit: return make_error_code(errc::retry_limit_exceeded);
      case attempt_result::acquired:
      case attempt_result::failed: break;
    }
    return o.error;
  }

  [[noreturn]] void throw_failure(const attempt_outcome& o) const {
    switch (o.kind) {
      case attempt_result::held:
        throw lock_held_error(path_, options_.held_error, o.verdict.status.lease, o.verdict.status.age,
                              o.verdict.note);
      case attempt_result::self_held:
        throw std::filesystem::filesystem_error("acquire lock file (this PIDLock already holds it)",
                                                path_, error_of(o));
      case attempt_result::retry_limit:
        throw std::filesystem::filesystem_error("acquire lock file", path_, error_of(o));
      case attempt_result::acquired:
      case attempt_result::failed: break;
    }
    if (!o.subject.empty()) throw std::filesystem::filesystem_error(o.operation, path_, o.subject, o.error);
    throw std::filesystem::filesystem_error(o.operation, path_, o.error);
  }

  // Local or network removal path (DESIGN.md "Protocol", step 4), decided
  // once the lock's directory exists; until then, on its nearest existing
  // ancestor, every time.
  detail::fs_path file_system() const {
    if (fs_path_) return *fs_path_;
    const auto decision = detail::decide_fs_path(absolute_.parent_path());
    if (decision.final) fs_path_ = decision.path;
    return decision.path;
  }

  bool has_lease() const {
    std::lock_guard guard(state_mutex_);
    return lease_ != nullptr;
  }

  // The waiting calls' channel, made on first use and kept for the life of
  // the lock; made anew in a forked child (the parent's was forgotten at the
  // fork: sharing it would wake the parent's waiters).
  detail::wait_channel& channel() {
    std::lock_guard state(state_mutex_);
    if (!channel_ || channel_->forgotten())
      channel_ = std::make_unique<detail::wait_channel>(absolute_, detail::renewal_service::instance().watch());
    return *channel_;
  }

  Lease new_lease(const detail::process_identity& self) const {
    return detail::new_lease(self, options_.lease_stale_threshold);
  }

  // DESIGN.md "Protocol", acquire steps 1 to 4: publish; if taken, judge; if
  // stale, reclaim under the inode's flock and publish again.
  // Waiting callers pass their channel, so that a stop request cuts the
  // pause between reclamation retries short.
  // none: a reclamation that meets a busy or changed file returns
  // retry_limit at once (lock_waiter plans the retry instead of sleeping).
  enum class retry_pause { between_retries, none };

  attempt_outcome attempt(const std::stop_token& stop, detail::wait_channel* waiting = nullptr,
                          retry_pause pause = retry_pause::between_retries) {
    std::lock_guard guard(op_mutex_);
    {
      std::lock_guard state(state_mutex_);
      switch (state_locked()) {
        case lock_state::held:
          return with(attempt_result::self_held);
        case lock_state::lost:
          // Until its holder releases it: a release() meant for the lost
          // lease must never meet a new one.
          return failure("acquire lock file (this PIDLock's lease was lost and is not released yet; call release() first)",
                         make_error_code(errc::lease_lost));
        case lock_state::abandoned:
          forget_abandoned_locked();
          break;
        case lock_state::idle:
          lease_.reset();
          break;
      }
    }
    const auto& self = detail::self_identity();
    int retries = 0;
    int vanished = 0;
    for (;;) {
      auto lease = new_lease(self);
      auto record = format_lease(lease);
      auto published = detail::publish(absolute_, record, detail::to_mode(options_.file_mode),
                                       detail::to_mode(options_.directory_mode), lease.owner_id);
      if (!published.error) return own(std::move(published.fd), std::move(lease), std::move(record));
      if (published.error != std::errc::file_exists) {
        auto failed = failure(published.operation, published.error);
        failed.subject = std::move(published.subject);
        return failed;
      }

      const auto kind = file_system();
      auto seen = detail::observe_file(absolute_, kind);
      if (seen.error == std::errc::no_such_file_or_directory) {
        if (++vanished < max_vanished_passes) continue;
        return with(attempt_result::retry_limit);
      }
      if (seen.error) return failure(seen.operation, seen.error);
      memory_.record(seen.bytes, seen.facts, std::chrono::steady_clock::now());
      auto verdict = detail::judge(seen.bytes, seen.facts, options_, &memory_, self);
      if (verdict.status.state == LockState::foreign)
        return failure("acquire lock file", make_error_code(errc::not_a_lock_file));
      if (verdict.status.state == LockState::held) {
        auto held = with(attempt_result::held);
        held.verdict = std::move(verdict);
        return held;
      }

      const auto& judged = seen.bytes;
      const auto now = std::chrono::steady_clock::now();
      if (judged != flock_busy_bytes_) flock_busy_since_.reset();
      const bool wedged = flock_busy_since_ && now - *flock_busy_since_ >= flock_wedge_bound();
      const auto removed = remove_if(kind, seen.fd, seen.facts.identity, judged,
                                     [&](const std::string& bytes) { return bytes == judged; }, wedged);
      if (removed == removal::busy && !wedged) {
        if (!flock_busy_since_) flock_busy_since_ = now;
        flock_busy_bytes_ = judged;
      } else {
        flock_busy_since_.reset();
      }
      switch (removed) {
        case removal::removed:
          if (kind == detail::fs_path::network || wedged) claims().sweep_leftovers(self);
          [[fallthrough]];
        case removal::vanished:
          if (++vanished < max_vanished_passes) continue;
          return with(attempt_result::retry_limit);
        case removal::busy:
        case removal::changed:
          if (++retries >= options_.acquire_retry_limit || pause == retry_pause::none)
            return with(attempt_result::retry_limit);
          if (waiting)
            waiting->wait_until(std::chrono::steady_clock::now() + options_.acquire_retry_delay, detail::no_handle);
          else
            std::this_thread::sleep_for(options_.acquire_retry_delay);
          if (stop.stop_requested()) return with(attempt_result::retry_limit);
          continue;
        case removal::failed:
          return failure(removal_failure_.operation, removal_failure_.error);
      }
    }
  }

  // The one removal primitive, for reclamation and release alike: remove the
  // lock file only if it is still the file we judged (network_claims.hpp).
  // fd is our descriptor of it, identity its inode (local file systems
  // only), generation the bytes judged (they name the claim), expected tells
  // whether bytes read now are still that file. flock_wedged: the inode's
  // flock has stayed busy for longer than any remover of this protocol holds
  // it (a process outside the protocol holds it), so the claim path is taken
  // without it.
  template <class BytesAreExpected>
  removal remove_if(detail::fs_path kind, detail::unique_fd& fd, detail::file_identity identity,
                    std::string_view generation, BytesAreExpected&& expected, bool flock_wedged = false) {
    if (kind == detail::fs_path::network || flock_wedged)
      return claims().remove(fd, generation, expected,
                             flock_wedged ? detail::flock_use::skip : detail::flock_use::filter);
    return detail::remove_lock_file_if(absolute_, fd.get(), identity, expected, removal_failure_);
  }

  detail::claimed_removal claims() { return {absolute_, options_, removal_failure_}; }

  // How long the inode's flock must stay busy before a remover concludes
  // that someone outside the protocol holds it (a reader's flock(LOCK_SH),
  // say) and takes the claim path instead: a remover of this protocol holds
  // it for a few system calls. Counted in the retries the caller allows.
  std::chrono::steady_clock::duration flock_wedge_bound() const {
    const auto retries = std::max(options_.acquire_retry_limit - 1, 1);
    return std::max<std::chrono::steady_clock::duration>(options_.acquire_retry_delay * retries,
                                                         std::chrono::milliseconds(50));
  }

  enum class fencing { fenced, taken_over, failed };

  // Ownership of the file just published, with its fencing token when
  // Options::fencing. Taken over before the token was handed out (only
  // after a pause past the whole stale threshold): a race lost, as a
  // reclaimer loses one.
  attempt_outcome own(detail::unique_fd fd, Lease lease, std::string record) {
    if (!options_.fencing) return take_ownership(std::move(fd), std::move(lease), std::move(record));
    attempt_outcome failed;
    std::vector<std::uint64_t> below;  // the generations to remove once it is ours
    fencing fenced = fencing::failed;
    try {
      fenced = fence(fd, lease, record, below, failed);
    } catch (...) {  // out of memory: no lock file of ours may stay behind
      detail::remove_name(absolute_);  // published an instant ago: no contender may reclaim it yet
      throw;
    }
    switch (fenced) {
      case fencing::fenced:
        break;
      case fencing::taken_over:
        return with(attempt_result::retry_limit);
      case fencing::failed:
        return failed;
    }
    auto taken = take_ownership(std::move(fd), std::move(lease), std::move(record));
    if (taken.kind == attempt_result::acquired) detail::remove_generations(absolute_, below);
    return taken;
  }

  // DESIGN.md "Fencing tokens" (fencing.hpp, steps 1 to 5), between
  // publishing the lock file and taking ownership of it. fenced: lease and
  // record carry the new token, and so does the file. taken_over: the lock
  // file was taken over before the token was handed out. failed: the
  // publication is undone.
  fencing fence(detail::unique_fd& fd, Lease& lease, std::string& record, std::vector<std::uint64_t>& below,
                attempt_outcome& failed) {
    const auto kind = file_system();
    detail::file_facts facts;
    const auto undo = [&](attempt_outcome why, std::string_view written = {}) {
      remove_if(kind, fd, facts.identity, record,
                [&](const std::string& bytes) { return bytes == record || (!written.empty() && bytes == written); });
      failed = std::move(why);
      return fencing::failed;
    };
    if (auto ec = detail::stat_fd(fd.get(), facts)) {
      detail::remove_name(absolute_);  // published an instant ago: no contender may reclaim it yet
      failed = failure("stat lock file", ec);
      return fencing::failed;
    }
    auto generation = detail::create_next_generation(absolute_, detail::to_mode(options_.file_mode));
    if (generation.error) {
      auto why = failure(generation.operation, generation.error);
      why.subject = std::move(generation.subject);
      return undo(std::move(why));
    }
    // Step 4, after the creation (fencing.hpp says why).
    if (kind == detail::fs_path::network) {
      auto seen = detail::observe_file(absolute_, kind);
      if (seen.error == std::errc::no_such_file_or_directory || (!seen.error && seen.bytes != record))
        return fencing::taken_over;
      if (seen.error) return undo(failure(seen.operation, seen.error));
    } else {
      detail::file_facts named;
      const auto ec = detail::stat_path(absolute_, named);
      if (ec == std::errc::no_such_file_or_directory || (!ec && named.identity != facts.identity))
        return fencing::taken_over;
      if (ec) return undo(failure("stat lock file", ec));
    }
    lease.fencing_token = generation.token;
    below = std::move(generation.below);
    auto fenced = format_lease(lease);  // longer than record: written over it whole
    if (auto ec = detail::write_at(fd.get(), fenced, 0)) return undo(failure("write fencing token to lock file", ec), fenced);
    record = std::move(fenced);
    return fencing::fenced;
  }

  attempt_outcome take_ownership(detail::unique_fd fd, Lease lease, std::string record) {
    auto held = std::make_shared<detail::held_lease>();
    held->kind = file_system();
    detail::file_facts facts;
    // The inode identifies our file on local file systems only (on network
    // ones the bytes do); the device picks the renewal worker either way.
    if (auto ec = detail::stat_fd(fd.get(), facts)) {
      // Without its identity we cannot fence; but we published it an
      // instant ago, and no contender may reclaim a lease this fresh.
      detail::remove_name(absolute_);
      return failure("stat lock file", ec);
    }
    held->fd = std::move(fd);
    held->path = absolute_;
    held->identity = facts.identity;
    held->fencing_token = lease.fencing_token;
    held->lease = std::move(lease);
    held->set_record(std::move(record));
    held->interval = options_.lease_heartbeat_interval;
    held->stale_threshold = options_.lease_stale_threshold;
    held->last_renewed = std::chrono::steady_clock::now();
    held->on_lost = options_.on_lease_lost;
    if (auto ec = detail::renewal_service::instance().add(held)) {
      // Without renewal the lease would silently expire: undo the acquisition.
      remove_if(held->kind, held->fd, held->identity, held->record,
                [&](const std::string& bytes) { return bytes == held->record; });
      return failure("start heartbeat thread", ec);
    }
    memory_.forget();
    std::lock_guard state(state_mutex_);
    lease_ = std::move(held);
    return with(attempt_result::acquired);
  }

  // Releases; when it is release() that finds the lease already lost (the
  // file gone or replaced before the renewal thread noticed), tells the
  // owner through on_lease_lost here, on the caller's thread, outside every
  // lock (the callback may call acquire()), before release() returns.
  std::string release_impl(std::error_code& ec) {
    ec.clear();
    std::function<void()> tell_loss;
    std::string operation = release_owned(ec, tell_loss);
    if (tell_loss) {
      try {
        tell_loss();
      } catch (...) {
        // As on the notifier thread: a callback's exception has nowhere to go.
      }
    }
    return operation;
  }

  std::string release_owned(std::error_code& ec, std::function<void()>& tell_loss) {
    std::shared_ptr<detail::held_lease> held;
    {
      std::lock_guard state(state_mutex_);
      switch (state_locked()) {
        case lock_state::idle:
          return "";
        case lock_state::abandoned:
          forget_abandoned_locked();
          return "";
        case lock_state::held:
        case lock_state::lost:
          held = lease_;
          break;
      }
    }
    // A queued on_lease_lost for this lease is dropped; a running one is
    // awaited (it may itself call release(), which does not wait).
    auto& service = detail::renewal_service::instance();
    service.cancel_callbacks(held.get());
    std::lock_guard guard(op_mutex_);
    {
      std::lock_guard state(state_mutex_);
      if (lease_ != held) return "";  // released by another thread meanwhile
      lease_.reset();
      if (channel_ && !channel_->forgotten()) channel_->notify();  // another thread of ours may wait for this object
    }
    detail::renewal_service::remove(held.get());

    // Told exactly once: by the notifier thread, or here when the loss is
    // found by this release, or was declared but its callback was cancelled
    // above before it could run.
    const auto tell_unless_told = [&] {
      if (!held->loss_reported.exchange(true)) tell_loss = held->on_lost;
    };
    {
      std::lock_guard lease_guard(held->mutex);  // waits out a renewal in progress
      if (!held->life.release_held()) {  // lost earlier: the file is not ours
        held->life.release_lost();
        tell_unless_told();
        return "";
      }
    }
    // Inactive now: the renewal thread leaves this lease (and its descriptor)
    // alone, so the retries below hold no lock another lease's renewal needs.
    // Fenced: remove only our own inode still carrying our ownerID. A busy
    // flock means a reclaimer is checking the file this very moment.
    const auto ours = [&](const std::string& bytes) {
      const auto on_disk = parse_lease(bytes);
      return on_disk && on_disk->owner_id == held->lease.owner_id;
    };
    auto removed = remove_if(held->kind, held->fd, held->identity, held->record, ours);
    const auto busy_since = std::chrono::steady_clock::now();
    for (int tries = 1; removed == removal::busy && tries < options_.acquire_retry_limit; ++tries) {
      std::this_thread::sleep_for(options_.acquire_retry_delay);
      removed = remove_if(held->kind, held->fd, held->identity, held->record, ours);
    }
    // Still busy: a flock held by someone outside the protocol (a reader's
    // LOCK_SH) must not keep the owner from releasing. Wait out the bound,
    // then remove through our generation's claim, without the flock.
    if (removed == removal::busy) {
      const auto wedged_at = busy_since + flock_wedge_bound();
      if (const auto now = std::chrono::steady_clock::now(); now < wedged_at) std::this_thread::sleep_until(wedged_at);
      removed = remove_if(held->kind, held->fd, held->identity, held->record, ours, true);
    }
    held->fd.reset();
    if (removed == removal::changed || removed == removal::vanished) {
      tell_unless_told();
      return "";
    }
    if (removed == removal::failed) {
      ec = removal_failure_.error;
      return "release lock file: " + removal_failure_.operation;
    }
    if (removed == removal::busy) {
      ec = std::make_error_code(std::errc::resource_unavailable_try_again);
      return std::string("release lock file (").append(detail::removal_in_use_hint) +
             "; the file is left to go stale)";
    }
    return "";
  }

  // DESIGN.md "Waiting": attempt, then sleep until the earliest of the
  // deadline, the moment the observed file turns stale, a change to its
  // directory entry, the holder's exit, and the poll period.
  bool wait_until(std::chrono::steady_clock::time_point deadline, const std::stop_token& stop) {
    auto& events = channel();
    const detail::waiting_call active(events);
    std::stop_callback wake_on_stop(stop, [&events] { events.notify(); });
    const auto& self = detail::self_identity();
    for (;;) {
      events.watch();  // before the attempt, so that no release in between is missed (and again after the directory moved)
      events.drain();  // before the stop check: a stop requested after it keeps its wake-up
      if (stop.stop_requested()) return false;
      const auto o = attempt(stop, &events);
      if (o.kind == attempt_result::acquired) return true;
      if (o.kind == attempt_result::failed) throw_failure(o);
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      const auto next = detail::plan_next_attempt(now, deadline, o.kind == attempt_result::held ? &o.verdict : nullptr,
                                                  o.kind == attempt_result::retry_limit,
                                                  options_.acquire_retry_delay, self);
      events.wait_until(next.at, next.holder_exit.get());
    }
  }

  std::filesystem::path path_;      // as given: used in errors and path()
  std::filesystem::path absolute_;  // used for every system call (the cwd may change)
  Options options_;
  // Usable in a forked child even when a parent thread held them at the fork.
  mutable detail::fork_safe_mutex op_mutex_;     // one acquire, release or inspect at a time
  mutable detail::fork_safe_mutex state_mutex_;  // guards lease_; held() never waits for an acquire
  std::shared_ptr<detail::held_lease> lease_;    // the lease issued last and not released (lock_state)
  detail::observation_memory memory_;
  detail::removal_failure removal_failure_;      // guarded by op_mutex_
  // Since when the flock of the file with these bytes has been found busy
  // (guarded by op_mutex_): past flock_wedge_bound(), the claim path.
  std::optional<std::chrono::steady_clock::time_point> flock_busy_since_;
  std::string flock_busy_bytes_;
  mutable std::optional<detail::fs_path> fs_path_;  // guarded by op_mutex_
  std::unique_ptr<detail::wait_channel> channel_;  // guarded by state_mutex_; made by waiting
};

}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_PID_LOCK_HPP
