// Errors: the library's own error codes and their category. Failures of the
// operating system travel as std::filesystem::filesystem_error with errno.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_ERRORS_HPP
#define LOCKFILE_DETAIL_ERRORS_HPP

namespace lockfile {

enum class errc {
  lock_held = 1,         // another live owner holds the lock (Go: ErrLockHeld)
  retry_limit_exceeded,  // reclamation races outlasted acquire_retry_limit
  lease_lost,            // ownership was lost while held
  not_a_lock_file,       // a file that is not a lease is at the path; it is never touched
};

namespace detail {
class lockfile_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "lockfile"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::lock_held:
        return "lock is held by another owner";
      case errc::retry_limit_exceeded:
        return "gave up reclaiming a stale lock: acquire_retry_limit exceeded";
      case errc::lease_lost:
        return "lease was lost while held";
      case errc::not_a_lock_file:
        return "exists and is not a lock file; refusing to touch it";
    }
    return "unknown lockfile error";
  }

  // Both "held" outcomes mean "try again later", as EWOULDBLOCK does for flock.
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::lock_held:
      case errc::retry_limit_exceeded:
        return std::errc::resource_unavailable_try_again;
      case errc::lease_lost:
      case errc::not_a_lock_file:
        break;
    }
    return {value, *this};
  }
};
}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::lockfile_error_category category;
  return category;
}

inline std::error_code make_error_code(errc value) noexcept {
  return {static_cast<int>(value), error_category()};
}

}  // namespace lockfile

template <>
struct std::is_error_code_enum<lockfile::errc> : std::true_type {};

#endif  // LOCKFILE_DETAIL_ERRORS_HPP
