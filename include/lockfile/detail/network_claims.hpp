// Removal: the one primitive that reclamation and release share, "remove the
// lock file only if it is still the file I judged", on its two paths: under
// the inode's flock (local file systems), and under a claim (network ones,
// and wherever a foreign flock wedges the first).
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_NETWORK_CLAIMS_HPP
#define LOCKFILE_DETAIL_NETWORK_CLAIMS_HPP

namespace lockfile::detail {

enum class removal { removed, busy, changed, vanished, failed };

// What a failed removal tried, and why it failed.
struct removal_failure {
  std::string operation = "remove stale lock file";
  std::error_code error;
};

// Files that vanish under an attempt are retried at once, without counting
// against acquire_retry_limit; this only bounds a pathological loop.
inline constexpr int max_vanished_passes = 1000;

// Claims of one generation stack up only when claimants die or stall; past
// this many stale levels, a claim counts as busy.
inline constexpr int max_claim_levels = 16;

// EPERM or EACCES on a name we may not remove (POSIX: in a sticky directory
// such as /tmp only a file's owner may unlink it). Retrying cannot help, so
// the error says why and what to do (removal_refused_hint).
inline std::string not_permitted(std::string operation, const std::filesystem::path& name) {
  file_facts facts;
  if (!stat_path(name, facts)) operation += removal_refused_hint(facts);
  return operation;
}

// Local file systems: unlink the path only if it still names the inode we
// opened and that inode still holds the bytes we judged. Every unlink of the
// path happens under the flock of the inode it names, and nobody can create
// the path while it exists, so the check and the unlink are one step: no
// contender can ever delete a fresh lock.
template <class BytesAreExpected>
removal remove_lock_file_if(const std::filesystem::path& lock_file, native_handle fd, file_identity identity,
                            BytesAreExpected&& expected, removal_failure& failure) {
  const auto failed = [&](std::string operation, std::error_code ec) {
    failure.operation = std::move(operation);
    failure.error = ec;
    return removal::failed;
  };
  const flock_filter filter(fd);
  switch (filter.result) {
    case flock_result::locked:
    case flock_result::unsupported:  // a same-host filter only; the checks follow
      break;
    case flock_result::busy:
      return removal::busy;
    case flock_result::failed:
      return failed("lock stale lock file", filter.error);
  }
  file_facts named;
  if (auto error = stat_path(lock_file, named)) {
    if (error == std::errc::no_such_file_or_directory) return removal::vanished;
    return failed("stat lock file", error);
  }
  if (named.identity != identity) return removal::changed;
  std::string bytes;
  if (auto error = read_prefix(fd, bytes, max_record_bytes)) return failed("read lock file", error);
  if (!expected(bytes)) return removal::changed;
  if (auto error = remove_name(lock_file)) {
    if (error == std::errc::no_such_file_or_directory) return removal::vanished;
    if (removal_in_use(error)) return removal::busy;  // retried, like a busy guard
    if (error == std::errc::operation_not_permitted || error == std::errc::permission_denied)
      return failed(not_permitted("remove stale lock file", lock_file), error);
    return failed("remove stale lock file", error);
  }
  return removal::removed;
}

// Whether a claimed removal first takes the inode's flock as a filter among
// the processes of this host, or skips it (a foreign flock that never goes
// away would otherwise wedge the lock).
enum class flock_use { filter, skip };

// Network or unknown file systems (DESIGN.md "Protocol", step 4): flock is at
// most a same-host filter there, and stat may answer from a cache or for the
// name, so identity is decided by bytes read fresh, and removal of one
// generation is serialized across hosts by a claim file published like a
// lock. Under the claim: check fresh, move the file aside, check the moved
// file fresh (a renewal may have landed in between), then unlink it or put
// it back. Also the way out on a local file system whose lock file a
// process outside the protocol keeps flocked.
class claimed_removal {
 public:
  claimed_removal(const std::filesystem::path& lock_file, const Options& options, removal_failure& failure)
      : absolute_(lock_file), options_(options), failure_(failure) {}

  // fd is our descriptor of the judged file, generation its bytes (they
  // name the claim), expected tells whether bytes read now are still that
  // file. fd is closed before the file is unlinked: a network client keeps
  // an unlinked file that is still open under a temporary name (NFS
  // ".nfsXXXX", libfuse ".fuse_hiddenXXXX") until it is closed.
  template <class BytesAreExpected>
  removal remove(unique_fd& fd, std::string_view generation, BytesAreExpected&& expected,
                 flock_use use = flock_use::filter) {
    flock_filter filter(use == flock_use::filter ? fd.get() : no_handle);
    if (filter.result == flock_result::busy) return removal::busy;
    // Any other flock failure: flock is only a filter here.

    const auto& self = detail::self_identity();
    const Lease claim = new_lease(self, options_.lease_stale_threshold);
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
        return failed("claim stale lock file", published.error);
      auto other = detail::observe_file(name, fs_path::network);
      other.fd.reset();
      if (other.error == std::errc::no_such_file_or_directory) {
        if (++vanished < max_vanished_passes) continue;
        return removal::busy;
      }
      if (other.error) return failed("read claim of stale lock file", other.error);
      // Held: someone else is removing this generation. Foreign: not ours to
      // remove, so this generation cannot be claimed (one retry).
      if (detail::judge(other.bytes, other.facts, options_, nullptr, self).status.state != LockState::stale)
        return removal::busy;
      abandoned.emplace_back(std::move(name), std::move(other.bytes));
      ++level;
    }

    const auto outcome = [&] {
      auto seen = detail::observe_file(absolute_, fs_path::network);
      seen.fd.reset();
      if (seen.error == std::errc::no_such_file_or_directory) return removal::vanished;
      if (seen.error) return failed(seen.operation, seen.error);
      if (!expected(seen.bytes)) return removal::changed;
      // Others may take the next claim level once ours is stale: move only
      // while it is young, so that the moment is far from that.
      if (std::chrono::steady_clock::now() - claimed_at >= options_.lease_stale_threshold / 2)
        return removal::busy;  // too slow this time (a release retries; nothing was lost)
      const auto aside = detail::protocol_name(absolute_, claim.owner_id, ".reclaim");
      if (auto error = detail::move_name(absolute_, aside)) {
        if (error == std::errc::no_such_file_or_directory) return removal::vanished;
        if (detail::removal_in_use(error)) return removal::busy;
        return failed("move stale lock file aside", error);
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
    // rest: the name after the prefix, when it is ASCII (protocol names are).
    const auto is_leftover = [&](std::string_view rest) {
      for (const std::string_view suffix : {".reclaim", ".tmp"})
        if (rest.ends_with(suffix)) return is_owner_id(rest.substr(0, rest.size() - suffix.size()));
      const auto claim = rest.find(".claim");
      if (claim == std::string_view::npos || !only(rest.substr(0, claim), "0123456789abcdef")) return false;
      const auto level = rest.substr(claim + 6);
      return level.empty() || (level.front() == '.' && only(level.substr(1), "0123456789"));
    };
    for (const auto& leaf : detail::names_starting_with(dir, prefix)) {
      std::string rest;
      for (const auto c : leaf.substr(prefix.size())) {
        if (static_cast<unsigned>(c) > 0x7fU) break;
        rest.push_back(static_cast<char>(c));
      }
      if (rest.size() != leaf.size() - prefix.size() || !is_leftover(rest)) continue;
      const auto name = dir / leaf;
      auto seen = detail::observe_file(name, detail::fs_path::network);
      seen.fd.reset();
      if (seen.error) continue;
      if (detail::judge(seen.bytes, seen.facts, options_, nullptr, self).status.state != LockState::stale) continue;
      remove_if_unchanged(name, seen.bytes);
    }
  }

 private:
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

  removal failed(std::string operation, std::error_code ec) {
    if (ec == std::errc::operation_not_permitted || ec == std::errc::permission_denied)
      operation = not_permitted(std::move(operation), absolute_);
    failure_.operation = std::move(operation);
    failure_.error = ec;
    return removal::failed;
  }

  const std::filesystem::path& absolute_;
  const Options& options_;
  removal_failure& failure_;
};

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_NETWORK_CLAIMS_HPP
