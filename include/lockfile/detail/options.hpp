// Options: everything a caller can tune, with the Go package's defaults, and
// the validation the PIDLock constructor applies.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_OPTIONS_HPP
#define LOCKFILE_DETAIL_OPTIONS_HPP

namespace lockfile {

struct Options {
  std::error_code held_error = make_error_code(errc::lock_held);  // {} also means the default
  int acquire_retry_limit = 12;
  std::chrono::milliseconds acquire_retry_delay{20};
  std::chrono::milliseconds invalid_lock_stale_threshold{1200};
  std::filesystem::perms file_mode = static_cast<std::filesystem::perms>(0644);
  std::filesystem::perms directory_mode = static_cast<std::filesystem::perms>(0755);
  std::function<bool(int pid)> process_appears_alive{};  // replaces the dead-owner probe
  std::chrono::milliseconds lease_heartbeat_interval{250};
  std::chrono::milliseconds lease_stale_threshold{3000};
  std::function<void()> on_lease_lost{};  // runs on the library's notifier thread
};

namespace detail {

[[noreturn]] inline void invalid_option(const std::string& what) {
  throw std::invalid_argument("lockfile::PIDLock: " + what);
}

inline std::string millis(std::chrono::milliseconds value) {
  return std::to_string(value.count()) + " ms";
}

inline void validate(const std::filesystem::path& lock_file, const Options& options) {
  using std::chrono::milliseconds;
  if (lock_file.empty()) invalid_option("lock_file: the path is empty");
  const auto name = lock_file.filename();
  if (name.empty() || name == "." || name == "..")
    invalid_option("lock_file: '" + lock_file.string() + "' does not name a file");
  if (options.acquire_retry_limit < 1)
    invalid_option("acquire_retry_limit must be at least 1, got " +
                   std::to_string(options.acquire_retry_limit));
  const std::pair<const char*, milliseconds> durations[] = {
      {"acquire_retry_delay", options.acquire_retry_delay},
      {"invalid_lock_stale_threshold", options.invalid_lock_stale_threshold},
      {"lease_heartbeat_interval", options.lease_heartbeat_interval},
      {"lease_stale_threshold", options.lease_stale_threshold},
  };
  // At most a day, as a record's own threshold: larger values would
  // overflow the record's nanoseconds and block a lock for centuries.
  constexpr milliseconds longest = std::chrono::hours(24);
  for (const auto& [field, value] : durations) {
    if (value < milliseconds::zero())
      invalid_option(std::string(field) + " must not be negative, got " + millis(value));
    if (value > longest)
      invalid_option(std::string(field) + " must be at most 24 hours (" + millis(longest) + "), got " +
                     millis(value));
  }
  if (options.lease_heartbeat_interval == milliseconds::zero())
    invalid_option("lease_heartbeat_interval must be positive");
  if (options.lease_stale_threshold == milliseconds::zero())
    invalid_option("lease_stale_threshold must be positive");
  if (options.lease_heartbeat_interval >= options.lease_stale_threshold)
    invalid_option("lease_heartbeat_interval (" + millis(options.lease_heartbeat_interval) +
                   ") must be shorter than lease_stale_threshold (" +
                   millis(options.lease_stale_threshold) +
                   "), or the lease would expire between heartbeats");
  using std::filesystem::perms;
  if ((options.file_mode & ~perms::mask) != perms::none)
    invalid_option("file_mode has bits outside 07777");
  if ((options.directory_mode & ~perms::mask) != perms::none)
    invalid_option("directory_mode has bits outside 07777");
}

}  // namespace detail
}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_OPTIONS_HPP
