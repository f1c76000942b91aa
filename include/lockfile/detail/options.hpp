// Options: everything a caller can tune, with the Go package's defaults, and
// the validation the PIDLock constructor applies.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_OPTIONS_HPP
#define LOCKFILE_DETAIL_OPTIONS_HPP

namespace lockfile {

// A permission mode for Options::file_mode and Options::directory_mode, given
// either as a plain octal integer, the way chmod(1) spells it, or as
// std::filesystem::perms:
//   {.file_mode = 0600}
//   {.file_mode = std::filesystem::perms::owner_read | std::filesystem::perms::owner_write}
// It converts back to std::filesystem::perms and compares with both forms.
// A value with bits outside 07777 (a file type such as 0100644, or a negative
// number) is kept as given and refused by the PIDLock constructor, with an
// std::invalid_argument naming the field and the value.
class FileMode {
 public:
  constexpr FileMode(std::filesystem::perms perms) noexcept  // implicit: old code assigns perms
      : mode_(static_cast<std::intmax_t>(static_cast<std::underlying_type_t<std::filesystem::perms>>(perms))) {}
  template <class Int>
    requires(std::is_integral_v<Int> && !std::is_same_v<Int, bool>)
  constexpr FileMode(Int mode) noexcept  // implicit: {.file_mode = 0600}
      : mode_(std::cmp_greater(mode, std::numeric_limits<std::intmax_t>::max())
                  ? std::numeric_limits<std::intmax_t>::max()
                  : static_cast<std::intmax_t>(mode)) {}

  constexpr operator std::filesystem::perms() const noexcept {  // implicit: code that reads perms
    return static_cast<std::filesystem::perms>(
        static_cast<std::underlying_type_t<std::filesystem::perms>>(mode_));
  }
  // The mode as given (saturated to intmax_t), e.g. 0600 == 384.
  constexpr std::intmax_t value() const noexcept { return mode_; }
  // Only permission, set-id and sticky bits: what the constructor accepts.
  constexpr bool valid() const noexcept { return mode_ >= 0 && mode_ <= 07777; }

  friend constexpr bool operator==(FileMode a, FileMode b) noexcept { return a.mode_ == b.mode_; }
  // Exact, so that `mode == perms` picks neither a conversion to FileMode
  // nor the built-in comparison of perms (which would be ambiguous).
  friend constexpr bool operator==(FileMode a, std::filesystem::perms b) noexcept {
    return a == FileMode(b);
  }

 private:
  std::intmax_t mode_;
};

struct Options {
  std::error_code held_error = make_error_code(errc::lock_held);  // {} also means the default
  int acquire_retry_limit = 12;
  std::chrono::milliseconds acquire_retry_delay{20};
  std::chrono::milliseconds invalid_lock_stale_threshold{1200};
  FileMode file_mode = 0644;       // or std::filesystem::perms; the umask applies
  FileMode directory_mode = 0755;  // each missing parent directory; the umask applies
  std::function<bool(int pid)> process_appears_alive{};  // replaces the dead-owner probe
  std::chrono::milliseconds lease_heartbeat_interval{250};
  std::chrono::milliseconds lease_stale_threshold{3000};
  std::function<void()> on_lease_lost{};  // runs on the library's notifier thread
  // Every acquisition takes a fencing token, strictly greater than every
  // one handed out for the path before (PIDLock::fencing_token()). Costs a
  // durable file creation (fsync) per acquisition.
  bool fencing = false;
};

namespace detail {

[[noreturn]] inline void invalid_option(const std::string& what) {
  throw std::invalid_argument("lockfile::PIDLock: " + what);
}

inline std::string millis(std::chrono::milliseconds value) {
  return std::to_string(value.count()) + " ms";
}

// 0600 as "0600", -1 as "-1": a mode the way it is written in code.
inline std::string octal(std::intmax_t value) {
  if (value < 0) return std::to_string(value);
  char digits[24] = {};  // 2^63 needs 21 octal digits
  char* const end = std::to_chars(std::begin(digits), std::end(digits), value, 8).ptr;
  return "0" + std::string(std::begin(digits), end);
}

inline void validate_mode(const char* field, FileMode mode) {
  if (!mode.valid())
    invalid_option(std::string(field) + " has bits outside 07777, got " + octal(mode.value()) +
                   ": give permission bits only, like 0644 or std::filesystem::perms::owner_read");
}

// The path often comes from a user (a command line, a configuration file), so
// its errors speak of the path, not of this constructor's parameter.
inline void validate_path(const std::filesystem::path& lock_file) {
  if (lock_file.empty()) throw std::invalid_argument("the lock file path is empty");
  const auto name = lock_file.filename();
  if (!name.empty() && name != "." && name != "..") return;
  const std::string ending = name.empty() ? "/" : name.string();
  throw std::invalid_argument("lock file path '" + lock_file.string() + "' does not name a file: it ends in '" +
                              ending + "', so it names a directory; name a file in it, like '" +
                              (lock_file / "app.lock").string() + "'");
}

inline void validate(const std::filesystem::path& lock_file, const Options& options) {
  using std::chrono::milliseconds;
  validate_path(lock_file);
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
  validate_mode("file_mode", options.file_mode);
  validate_mode("directory_mode", options.directory_mode);
}

}  // namespace detail
}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_OPTIONS_HPP
