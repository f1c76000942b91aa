// PIDLock: acquire, release and waiting, built on the pieces above.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_PID_LOCK_HPP
#define LOCKFILE_DETAIL_PID_LOCK_HPP

namespace lockfile {

LockStatus inspect(const std::filesystem::path& lock_file, const Options& options = {});

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
    const char* operation = release_impl(ec);
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

 private:
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
    const char* operation = "";   // when failed
    std::filesystem::path subject;  // when failed on another path than the lock file's
    detail::verdict verdict;      // when held
  };

  enum class removal { removed, busy, changed, vanished, failed };

  // Files that vanish under an attempt are retried at once, without counting
  // against acquire_retry_limit; this only bounds a pathological loop.
  static constexpr int max_vanished_passes = 1000;

  // Claims of one generation stack up only when claimants die or stall; past
  // this many stale levels, a claim counts as busy.
  static constexpr int max_claim_levels = 16;

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

  static attempt_outcome failure(const char* operation, std::error_code ec) {
    attempt_outcome o;
    o.operation = operation;
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
        throw lock_held_error(path_, options_.held_error, o.verdict.status.lease, o.verdict.status.age);
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
    Lease lease;
    const auto now = std::chrono::system_clock::now();
    lease.owner_id = detail::new_owner_id(self.pid, now);
    lease.pid = self.pid;
    lease.heartbeat = now;
    lease.host = self.host;
    lease.boot_id = self.boot_id;
    lease.pid_namespace = self.pid_namespace;
    lease.start_time = self.start_time;
    lease.stale_threshold = options_.lease_stale_threshold;
    return lease;
  }

  // DESIGN.md "Protocol", acquire steps 1 to 4: publish; if taken, judge; if
  // stale, reclaim under the inode's flock and publish again.
  // Waiting callers pass their channel, so that a stop request cuts the
  // pause between reclamation retries short.
  attempt_outcome attempt(const std::stop_token& stop, detail::wait_channel* waiting = nullptr) {
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
      const auto record = format_lease(lease);
      auto published = detail::publish(absolute_, record, detail::to_mode(options_.file_mode),
                                       detail::to_mode(options_.directory_mode), lease.owner_id);
      if (!published.error) return take_ownership(std::move(published.fd), std::move(lease), record);
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
      memory_.record(seen.bytes, std::chrono::steady_clock::now());
      auto verdict = detail::judge(seen.bytes, seen.facts, options_, &memory_, self);
      if (verdict.status.state == LockState::held) {
        auto held = with(attempt_result::held);
        held.verdict = std::move(verdict);
        return held;
      }

      const auto& judged = seen.bytes;
      switch (remove_if(kind, seen.fd, seen.facts.identity, judged,
                        [&](const std::string& now) { return now == judged; })) {
        case removal::removed:
          if (kind == detail::fs_path::network) sweep_leftovers(self);
          [[fallthrough]];
        case removal::vanished:
          if (++vanished < max_vanished_passes) continue;
          return with(attempt_result::retry_limit);
        case removal::busy:
        case removal::changed:
          if (++retries >= options_.acquire_retry_limit) return with(attempt_result::retry_limit);
          if (waiting)
            waiting->wait_until(std::chrono::steady_clock::now() + options_.acquire_retry_delay, -1);
          else
            std::this_thread::sleep_for(options_.acquire_retry_delay);
          if (stop.stop_requested()) return with(attempt_result::retry_limit);
          continue;
        case removal::failed:
          return failure(removal_operation_, removal_error_);
      }
    }
  }

  // The one removal primitive, for reclamation and release alike: remove the
  // lock file only if it is still the file we judged. fd is our descriptor
  // of it, identity its inode (local file systems only), generation the
  // bytes judged (they name the claim on network file systems), expected
  // tells whether bytes read now are still that file. On the network path
  // fd is closed before the file is unlinked: a network client keeps an
  // unlinked file that is still open under a temporary name (NFS ".nfsXXXX",
  // libfuse ".fuse_hiddenXXXX") until it is closed.
  template <class BytesAreExpected>
  removal remove_if(detail::fs_path kind, detail::unique_fd& fd, detail::file_identity identity,
                    std::string_view generation, BytesAreExpected&& expected) {
    if (kind == detail::fs_path::network) return remove_claimed(fd, generation, expected);
    return remove_lock_file_if(fd.get(), identity, expected);
  }

  removal removal_failed(const char* operation, std::error_code ec) {
    removal_operation_ = operation;
    removal_error_ = ec;
    return removal::failed;
  }

  // flock on the judged file, dropped explicitly on the way out, not left to
  // close(): a fork() by another thread meanwhile would share the
  // descriptor, and the child would hold the flock for its whole life.
  struct flock_filter {
    int fd = -1;
    detail::flock_result result = detail::flock_result::unsupported;
    std::error_code error;
    explicit flock_filter(int descriptor) : fd(descriptor) {
      if (fd >= 0) result = detail::try_flock(fd, error);
    }
    flock_filter(const flock_filter&) = delete;
    flock_filter& operator=(const flock_filter&) = delete;
    ~flock_filter() { unlock(); }
    void unlock() {
      if (result == detail::flock_result::locked) detail::unlock_flock(fd);
      result = detail::flock_result::unsupported;
    }
  };

  // Local file systems: unlink the path only if it still names the inode we
  // opened and that inode still holds the bytes we judged. Every unlink of
  // the path happens under the flock of the inode it names, and nobody can
  // create the path while it exists, so the check and the unlink are one
  // step: no contender can ever delete a fresh lock.
  template <class BytesAreExpected>
  removal remove_lock_file_if(int fd, detail::file_identity identity, BytesAreExpected&& expected) {
    const flock_filter filter(fd);
    switch (filter.result) {
      case detail::flock_result::locked:
      case detail::flock_result::unsupported:  // a same-host filter only; the checks follow
        break;
      case detail::flock_result::busy:
        return removal::busy;
      case detail::flock_result::failed:
        return removal_failed("lock stale lock file", filter.error);
    }
    detail::file_facts named;
    if (auto error = detail::stat_path(absolute_, named)) {
      if (error == std::errc::no_such_file_or_directory) return removal::vanished;
      return removal_failed("stat lock file", error);
    }
    if (named.identity != identity) return removal::changed;
    std::string bytes;
    if (auto error = detail::read_prefix(fd, bytes, detail::max_record_bytes))
      return removal_failed("read lock file", error);
    if (!expected(bytes)) return removal::changed;
    if (auto error = detail::remove_name(absolute_)) {
      if (error == std::errc::no_such_file_or_directory) return removal::vanished;
      return removal_failed("remove stale lock file", error);
    }
    return removal::removed;
  }

  // The claim of one generation of the lock file: ".<name>.<token>.claim",
  // token a hash of the generation's ownerID (of its bytes when it is not a
  // valid record), so that everyone who judged the same file contends for
  // the same claim.
  std::filesystem::path claim_name(std::string_view generation, int level) const {
    const auto record = parse_lease(generation);
    const std::string_view identity = record ? std::string_view(record->owner_id) : generation;
    std::uint64_t hash = 14695981039346656037ULL;  // FNV-1a
    for (const char c : identity) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    char token[17] = {};
    std::to_chars(token, token + 16, hash, 16);
    std::string suffix = ".claim";
    if (level > 0) suffix.append(1, '.').append(std::to_string(level));
    return detail::protocol_name(absolute_, token, suffix);
  }

  // Network or unknown file systems (DESIGN.md "Protocol", step 4): flock
  // is at most a same-host filter there, and stat may answer from a cache
  // or for the name, so identity is decided by bytes read fresh, and removal
  // of one generation is serialized across hosts by a claim file published
  // like a lock. Under the claim: check fresh, move the file aside, check the
  // moved file fresh (a renewal may have landed in between), then unlink it
  // or put it back.
  template <class BytesAreExpected>
  removal remove_claimed(detail::unique_fd& fd, std::string_view generation, BytesAreExpected&& expected) {
    using detail::fs_path;
    flock_filter filter(fd.get());
    if (filter.result == detail::flock_result::busy) return removal::busy;
    // Any other flock failure: flock is only a filter here.

    const auto& self = detail::self_identity();
    const Lease claim = new_lease(self);
    const auto claim_record = format_lease(claim);
    const auto mode = detail::to_mode(options_.file_mode);
    std::vector<std::pair<std::filesystem::path, std::string>> abandoned;  // stale lower levels
    std::filesystem::path claimed;
    // The claim's age as others judge it counts from its record's heartbeat.
    const auto claimed_at = std::chrono::steady_clock::now();
    for (int level = 0, vanished = 0;;) {
      if (level > max_claim_levels) {
        // Every level is a stale claim of crashed or stalled claimants:
        // clear them, so that the next try starts again at level 0.
        for (const auto& [stale, bytes] : abandoned) remove_if_unchanged(stale, bytes);
        return removal::busy;
      }
      auto name = claim_name(generation, level);
      auto published = detail::publish_new_file(name, claim_record, mode, absolute_, claim.owner_id);
      if (!published.error) {
        claimed = std::move(name);
        break;  // (its descriptor closes here: the claim is only a name)
      }
      if (published.error != std::errc::file_exists)
        return removal_failed("claim stale lock file", published.error);
      auto other = detail::observe_file(name, fs_path::network);
      other.fd.reset();
      if (other.error == std::errc::no_such_file_or_directory) {
        if (++vanished < max_vanished_passes) continue;
        return removal::busy;
      }
      if (other.error) return removal_failed("read claim of stale lock file", other.error);
      if (detail::judge(other.bytes, other.facts, options_, nullptr, self).status.state == LockState::held)
        return removal::busy;  // someone else is removing this generation
      abandoned.emplace_back(std::move(name), std::move(other.bytes));
      ++level;
    }

    const auto outcome = [&] {
      auto seen = detail::observe_file(absolute_, fs_path::network);
      seen.fd.reset();
      if (seen.error == std::errc::no_such_file_or_directory) return removal::vanished;
      if (seen.error) return removal_failed(seen.operation, seen.error);
      if (!expected(seen.bytes)) return removal::changed;
      // Others may take the next claim level once ours is stale: move only
      // while it is young, so that the moment is far from that.
      if (std::chrono::steady_clock::now() - claimed_at >= options_.lease_stale_threshold / 2)
        return removal::busy;  // too slow this time (a release retries; nothing was lost)
      const auto aside = detail::protocol_name(absolute_, claim.owner_id, ".reclaim");
      if (auto error = detail::move_name(absolute_, aside)) {
        if (error == std::errc::no_such_file_or_directory) return removal::vanished;
        return removal_failed("move stale lock file aside", error);
      }
      auto moved = detail::observe_file(aside, fs_path::network);
      moved.fd.reset();
      if (!moved.error && expected(moved.bytes)) {
        filter.unlock();
        fd.reset();
        detail::remove_name(aside);
        return removal::removed;
      }
      if (moved.error == std::errc::no_such_file_or_directory) return removal::vanished;
      detail::put_back(aside, absolute_);  // it changed: a live owner renewed it
      return removal::changed;
    }();

    // The abandoned levels below go first, each only if it is still the
    // stale claim judged, then our own: while ours stands, nobody starts
    // over at a lower level. Ours stays if it may already have been judged
    // stale (we stalled for the threshold): a claimant above us now works
    // under it, and removes it when done.
    for (const auto& [stale, bytes] : abandoned) remove_if_unchanged(stale, bytes);
    if (std::chrono::steady_clock::now() - claimed_at < options_.lease_stale_threshold)
      detail::remove_name(claimed);
    return outcome;
  }

  // Removes a protocol file judged stale if a fresh read still shows the
  // bytes judged (best effort: the file is not the lock itself).
  static void remove_if_unchanged(const std::filesystem::path& name, const std::string& judged) {
    auto again = detail::observe_file(name, detail::fs_path::network);
    again.fd.reset();
    if (!again.error && again.bytes == judged) detail::remove_name(name);
  }

  // Protocol leftovers beside the lock file (a claim, a file moved aside or
  // a private publication file of a process that crashed mid-way) are judged
  // like lease records and removed once stale. Run after a reclamation on a
  // network file system: leftovers come from crashes, and crashes from
  // reclamations and releases there. Best effort: failures are ignored.
  void sweep_leftovers(const detail::process_identity& self) {
    const auto dir = absolute_.parent_path();
    const auto prefix = detail::protocol_name(absolute_, "", "").filename().native();
    // Only names of the protocol's exact shapes, so that a user's file that
    // happens to start with ".<name>." is never touched:
    //   .<name>.<hex token>.claim[.<level>]   .<name>.<ownerID>.reclaim|.tmp
    // where an ownerID is "<pid>-<nanoseconds>-<counter>-<hex>".
    const auto only = [](std::string_view text, std::string_view allowed) {
      return !text.empty() && text.find_first_not_of(allowed) == std::string_view::npos;
    };
    const auto is_owner_id = [&](std::string_view text) {
      for (int field = 0; field < 3; ++field) {
        const auto dash = text.find('-');
        if (dash == std::string_view::npos || !only(text.substr(0, dash), "0123456789")) return false;
        text.remove_prefix(dash + 1);
      }
      return only(text, "0123456789abcdef");
    };
    const auto is_leftover = [&](std::string_view leaf) {
      auto rest = leaf.substr(prefix.size());
      for (const std::string_view suffix : {".reclaim", ".tmp"})
        if (rest.ends_with(suffix)) return is_owner_id(rest.substr(0, rest.size() - suffix.size()));
      const auto claim = rest.find(".claim");
      if (claim == std::string_view::npos || !only(rest.substr(0, claim), "0123456789abcdef")) return false;
      const auto level = rest.substr(claim + 6);
      return level.empty() || (level.front() == '.' && only(level.substr(1), "0123456789"));
    };
    for (const auto& leaf : detail::names_starting_with(dir, prefix)) {
      if (!is_leftover(leaf)) continue;
      const auto name = dir / leaf;
      auto seen = detail::observe_file(name, detail::fs_path::network);
      seen.fd.reset();
      if (seen.error) continue;
      if (detail::judge(seen.bytes, seen.facts, options_, nullptr, self).status.state != LockState::stale) continue;
      remove_if_unchanged(name, seen.bytes);
    }
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
  const char* release_impl(std::error_code& ec) {
    ec.clear();
    std::function<void()> tell_loss;
    const char* operation = release_owned(ec, tell_loss);
    if (tell_loss) {
      try {
        tell_loss();
      } catch (...) {
        // As on the notifier thread: a callback's exception has nowhere to go.
      }
    }
    return operation;
  }

  const char* release_owned(std::error_code& ec, std::function<void()>& tell_loss) {
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
    service.remove(held.get());

    // Told exactly once: by the notifier thread, or here when the loss is
    // found by this release, or was declared but its callback was cancelled
    // above before it could run.
    const auto tell_unless_told = [&] {
      if (!held->loss_reported.exchange(true)) tell_loss = held->on_lost;
    };
    {
      std::lock_guard lease_guard(held->mutex);  // waits out a renewal in progress
      if (!held->release_held()) {  // lost earlier: the file is not ours
        held->release_lost();
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
    for (int tries = 1; removed == removal::busy && tries < options_.acquire_retry_limit; ++tries) {
      std::this_thread::sleep_for(options_.acquire_retry_delay);
      removed = remove_if(held->kind, held->fd, held->identity, held->record, ours);
    }
    held->fd.reset();
    if (removed == removal::changed || removed == removal::vanished) {
      tell_unless_told();
      return "";
    }
    if (removed == removal::failed) {
      ec = removal_error_;
      return "release lock file";
    }
    if (removed == removal::busy) {
      ec = std::make_error_code(std::errc::resource_unavailable_try_again);
      return "release lock file (another process kept checking it; the file is left to go stale)";
    }
    return "";
  }

  // How long a waiting lock sleeps between attempts when nothing wakes it
  // sooner (a remote host's release raises no local event), with jitter so
  // that waiters do not retry in lockstep.
  static std::chrono::steady_clock::duration poll_period() {
    thread_local std::minstd_rand jitter{std::random_device{}()};
    return std::chrono::milliseconds(50) + std::chrono::microseconds(jitter() % 25000);
  }

  // DESIGN.md "Waiting": attempt, then sleep until the earliest of the
  // deadline, the moment the observed file turns stale, a change to its
  // directory entry, the holder's exit, and the poll period.
  bool wait_until(std::chrono::steady_clock::time_point deadline, const std::stop_token& stop) {
    auto& events = channel();
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
      auto wake = std::min(deadline, now + poll_period());
      detail::unique_fd holder_exit;
      if (o.kind == attempt_result::held) {
        if (o.verdict.stale_at > now) wake = std::min(wake, o.verdict.stale_at);
        const auto& lease = o.verdict.status.lease;
        if (lease && detail::same_pid_space(*lease, self))
          holder_exit = detail::open_holder_exit_fd(lease->pid, lease->start_time);
      } else if (o.kind == attempt_result::retry_limit) {
        wake = std::min(wake, now + options_.acquire_retry_delay);
      }
      events.wait_until(wake, holder_exit.get());
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
  std::error_code removal_error_;
  const char* removal_operation_ = "remove stale lock file";
  mutable std::optional<detail::fs_path> fs_path_;  // guarded by op_mutex_
  std::unique_ptr<detail::wait_channel> channel_;  // guarded by state_mutex_; made by waiting
};

}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_PID_LOCK_HPP
