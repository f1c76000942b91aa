// lockfile: exclusive locks between processes, and between hosts that share a
// file system, held as lease files.
//
// The owner keeps a one-line JSON lease record fresh from a background thread;
// anyone else takes the lock over once the lease is stale, or at once when the
// owner is provably dead. See README.md for the guarantees and DESIGN.md for the
// protocol. SPDX-License-Identifier: MIT
#ifndef LOCKFILE_LOCKFILE_HPP
#define LOCKFILE_LOCKFILE_HPP

#define LOCKFILE_VERSION_MAJOR 0
#define LOCKFILE_VERSION_MINOR 1
#define LOCKFILE_VERSION_PATCH 0
#define LOCKFILE_VERSION "0.1.0"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>  // NOLINT(modernize-deprecated-headers): POSIX sigset_t, pthread_sigmask
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#if defined(__linux__)
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#endif
#else
#error "lockfile needs a POSIX system (link, flock, O_NOFOLLOW)"
#endif

// ===========================================================================
// Errors: the library's own error codes and their category. Failures of the
// operating system travel as std::filesystem::filesystem_error with errno.
// ===========================================================================
namespace lockfile {

enum class errc {
  lock_held = 1,         // another live owner holds the lock (Go: ErrLockHeld)
  retry_limit_exceeded,  // reclamation races outlasted acquire_retry_limit
  lease_lost,            // ownership was lost while held
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

// ===========================================================================
// Options: everything a caller can tune, with the Go package's defaults, and
// the validation the PIDLock constructor applies.
// ===========================================================================
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
  for (const auto& [field, value] : durations)
    if (value < milliseconds::zero())
      invalid_option(std::string(field) + " must not be negative, got " + millis(value));
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

// ===========================================================================
// Lease record: the on-disk format (one line of compact JSON, the Go package's
// schema version 1), its strict bounded parser, its writer, and the types that
// describe a lock file's state to callers.
// ===========================================================================
namespace lockfile {

struct Lease {
  int version = 1;
  std::string owner_id;
  int pid = 0;
  std::chrono::system_clock::time_point heartbeat;  // lastHeartbeatUnixNano
  // Identity fields, absent in records written by the Go package:
  std::string host;                   // gethostname()
  std::string boot_id;                // Linux /proc/sys/kernel/random/boot_id
  std::uint64_t pid_namespace = 0;    // inode of /proc/self/ns/pid, 0 = unknown
  std::uint64_t start_time = 0;       // /proc/PID/stat field 22, 0 = unknown
  std::chrono::nanoseconds stale_threshold{0};  // owner's lease_stale_threshold, 0 = unknown

  friend bool operator==(const Lease&, const Lease&) = default;
};

enum class LockState { free, held, stale };

struct LockStatus {
  LockState state = LockState::free;
  std::optional<Lease> lease;        // empty when free or when the file is not a valid record
  std::chrono::nanoseconds age{0};   // since last heartbeat (valid) or last modification (invalid)
};

namespace detail {

// A lock file larger than this is invalid; it is never read whole.
inline constexpr std::size_t max_record_bytes = std::size_t{64} * 1024;
// Nesting allowed inside unknown values before a record counts as invalid.
inline constexpr int max_json_depth = 32;
// The largest staleThresholdNano a record may impose on others: a corrupt
// or hostile record must not block a lock for centuries.
inline constexpr std::chrono::nanoseconds max_record_threshold = std::chrono::hours(24);

inline std::int64_t unix_nanos(std::chrono::system_clock::time_point when) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
}

inline std::chrono::system_clock::time_point from_unix_nanos(std::int64_t nanos) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(nanos)));
}

// The length of the well-formed multi-byte UTF-8 sequence at the start of
// [at, end) (no overlongs, no surrogates, nothing above U+10FFFF), or 0.
inline int utf8_sequence_length(const char* at, const char* end) {
  const auto lead = static_cast<unsigned char>(*at);
  int length = 0;
  std::uint32_t code = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code = lead & 0x07u;
  } else {
    return 0;
  }
  if (end - at < length) return 0;
  for (int i = 1; i < length; ++i) {
    const auto next = static_cast<unsigned char>(at[i]);
    if ((next & 0xC0) != 0x80) return 0;
    code = (code << 6) | (next & 0x3Fu);
  }
  if ((length == 3 && (code < 0x800 || (code >= 0xD800 && code <= 0xDFFF))) ||
      (length == 4 && (code < 0x10000 || code > 0x10FFFF)))
    return 0;
  return length;
}

// A strict JSON reader over one buffer: no allocation except for the strings
// it is asked to decode, recursion bounded by max_json_depth.
class json_reader {
 public:
  explicit json_reader(std::string_view text) : at_(text.data()), end_(text.data() + text.size()) {}

  void skip_whitespace() {
    while (at_ != end_ && (*at_ == ' ' || *at_ == '\t' || *at_ == '\n' || *at_ == '\r')) ++at_;
  }
  bool done() const { return at_ == end_; }
  bool peek(char c) const { return at_ != end_ && *at_ == c; }
  bool consume(char c) {
    if (!peek(c)) return false;
    ++at_;
    return true;
  }

  // Decodes a string (escapes, surrogate pairs) into out; rejects control
  // characters and malformed UTF-8.
  bool read_string(std::string& out) {
    out.clear();
    if (!consume('"')) return false;
    while (at_ != end_) {
      const auto c = static_cast<unsigned char>(*at_);
      if (c == '"') {
        ++at_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (!read_escape(out)) return false;
      } else if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        ++at_;
      } else if (!copy_utf8_sequence(out)) {
        return false;
      }
    }
    return false;
  }

  // An integer field: a JSON number without fraction or exponent, in range.
  template <class Int>
  bool read_integer(Int& out) {
    const char* start = at_;
    if (peek('-')) ++at_;
    if (at_ == end_ || *at_ < '0' || *at_ > '9') return false;
    if (*at_ == '0' && at_ + 1 != end_ && at_[1] >= '0' && at_[1] <= '9') return false;
    while (at_ != end_ && *at_ >= '0' && *at_ <= '9') ++at_;
    if (at_ != end_ && (*at_ == '.' || *at_ == 'e' || *at_ == 'E')) return false;
    const auto [end, ec] = std::from_chars(start, at_, out);
    return ec == std::errc{} && end == at_;
  }

  bool skip_value(int depth) {  // NOLINT(misc-no-recursion): bounded by max_json_depth
    if (depth > max_json_depth) return false;
    skip_whitespace();
    if (at_ == end_) return false;
    switch (*at_) {
      case '"': {
        std::string ignored;
        return read_string(ignored);
      }
      case '{': return skip_container('}', depth, true);
      case '[': return skip_container(']', depth, false);
      case 't': return skip_word("true");
      case 'f': return skip_word("false");
      case 'n': return skip_word("null");
      default: return skip_number();
    }
  }

 private:
  bool skip_word(std::string_view word) {
    if (static_cast<std::size_t>(end_ - at_) < word.size() ||
        std::string_view(at_, word.size()) != word)
      return false;
    at_ += word.size();
    return true;
  }

  bool skip_digits() {
    const char* start = at_;
    while (at_ != end_ && *at_ >= '0' && *at_ <= '9') ++at_;
    return at_ != start;
  }

  bool skip_number() {
    consume('-');
    if (consume('0')) {
      // a leading zero stands alone
    } else if (!skip_digits()) {
      return false;
    }
    if (consume('.') && !skip_digits()) return false;
    if (peek('e') || peek('E')) {
      ++at_;
      if (!consume('+')) consume('-');
      if (!skip_digits()) return false;
    }
    return true;
  }

  bool skip_container(char close, int depth, bool object) {  // NOLINT(misc-no-recursion): see skip_value
    ++at_;
    skip_whitespace();
    if (consume(close)) return true;
    std::string key;
    for (;;) {
      if (object) {
        skip_whitespace();
        if (!read_string(key)) return false;
        skip_whitespace();
        if (!consume(':')) return false;
      }
      if (!skip_value(depth + 1)) return false;
      skip_whitespace();
      if (consume(close)) return true;
      if (!consume(',')) return false;
    }
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool read_hex4(std::uint32_t& out) {
    if (end_ - at_ < 4) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const int digit = hex_value(*at_++);
      if (digit < 0) return false;
      out = out * 16 + static_cast<std::uint32_t>(digit);
    }
    return true;
  }

  static void append_utf8(std::string& out, std::uint32_t code) {
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code >> 6)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (code >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (code >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  bool read_escape(std::string& out) {
    ++at_;  // the backslash
    if (at_ == end_) return false;
    const char c = *at_++;
    switch (c) {
      case '"': out.push_back('"'); return true;
      case '\\': out.push_back('\\'); return true;
      case '/': out.push_back('/'); return true;
      case 'b': out.push_back('\b'); return true;
      case 'f': out.push_back('\f'); return true;
      case 'n': out.push_back('\n'); return true;
      case 'r': out.push_back('\r'); return true;
      case 't': out.push_back('\t'); return true;
      case 'u': break;
      default: return false;
    }
    std::uint32_t code = 0;
    if (!read_hex4(code)) return false;
    if (code >= 0xDC00 && code <= 0xDFFF) return false;  // lone low surrogate
    if (code >= 0xD800 && code <= 0xDBFF) {
      std::uint32_t low = 0;
      if (!consume('\\') || !consume('u') || !read_hex4(low) || low < 0xDC00 || low > 0xDFFF)
        return false;
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(out, code);
    return true;
  }

  bool copy_utf8_sequence(std::string& out) {
    const int length = utf8_sequence_length(at_, end_);
    if (length == 0) return false;
    out.append(at_, static_cast<std::size_t>(length));
    at_ += length;
    return true;
  }

  const char* at_;
  const char* end_;
};

inline bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\n\r\v\f") == std::string_view::npos;
}

// Bytes that are not UTF-8 become U+FFFD (as Go's encoding/json does), so
// that every record we write is one we can read back.
inline void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80) {
      const int length = utf8_sequence_length(text.data() + i, text.data() + text.size());
      if (length == 0) {
        out += "\\ufffd";
      } else {
        out.append(text.data() + i, static_cast<std::size_t>(length));
        i += static_cast<std::size_t>(length) - 1;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xF]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

}  // namespace detail

// Parses one lease record. Returns nothing for anything that is not a valid
// record: not a JSON object, trailing bytes, a known key twice or with the
// wrong type, version != 1, blank ownerID, pid or heartbeat not positive, or
// more than 64 KiB. Unknown keys of any JSON type are skipped.
inline std::optional<Lease> parse_lease(std::string_view bytes) noexcept {
  if (bytes.size() > detail::max_record_bytes) return std::nullopt;
  try {
    enum field : unsigned {
      f_version = 1u << 0, f_owner = 1u << 1, f_pid = 1u << 2, f_heartbeat = 1u << 3,
      f_host = 1u << 4, f_boot = 1u << 5, f_pidns = 1u << 6, f_start = 1u << 7, f_stale = 1u << 8,
    };
    static constexpr std::pair<std::string_view, field> known[] = {
        {"version", f_version}, {"ownerID", f_owner}, {"pid", f_pid},
        {"lastHeartbeatUnixNano", f_heartbeat}, {"host", f_host}, {"bootID", f_boot},
        {"pidNamespace", f_pidns}, {"startTime", f_start}, {"staleThresholdNano", f_stale},
    };
    detail::json_reader in(bytes);
    Lease lease;
    unsigned seen = 0;
    std::int64_t version = 0;
    std::int64_t pid = 0;
    std::int64_t heartbeat = 0;
    std::int64_t stale = 0;
    std::string key;

    in.skip_whitespace();
    if (!in.consume('{')) return std::nullopt;
    in.skip_whitespace();
    if (!in.consume('}')) {
      for (;;) {
        in.skip_whitespace();
        if (!in.read_string(key)) return std::nullopt;
        in.skip_whitespace();
        if (!in.consume(':')) return std::nullopt;
        in.skip_whitespace();
        const auto* const match = std::find_if(std::begin(known), std::end(known),
                                        [&](const auto& entry) { return entry.first == key; });
        if (match == std::end(known)) {
          if (!in.skip_value(1)) return std::nullopt;
        } else {
          if (seen & match->second) return std::nullopt;  // duplicate key: ambiguous
          seen |= match->second;
          bool ok = false;
          switch (match->second) {
            case f_version: ok = in.read_integer(version); break;
            case f_owner: ok = in.read_string(lease.owner_id); break;
            case f_pid: ok = in.read_integer(pid); break;
            case f_heartbeat: ok = in.read_integer(heartbeat); break;
            case f_host: ok = in.read_string(lease.host); break;
            case f_boot: ok = in.read_string(lease.boot_id); break;
            case f_pidns: ok = in.read_integer(lease.pid_namespace); break;
            case f_start: ok = in.read_integer(lease.start_time); break;
            case f_stale: ok = in.read_integer(stale); break;
          }
          if (!ok) return std::nullopt;
        }
        in.skip_whitespace();
        if (in.consume('}')) break;
        if (!in.consume(',')) return std::nullopt;
      }
    }
    in.skip_whitespace();
    if (!in.done()) return std::nullopt;
    if (version != 1 || detail::is_blank(lease.owner_id) || pid <= 0 || pid > INT_MAX ||
        heartbeat <= 0 || stale < 0)
      return std::nullopt;
    lease.version = 1;
    lease.pid = static_cast<int>(pid);
    lease.heartbeat = detail::from_unix_nanos(heartbeat);
    lease.stale_threshold = std::chrono::nanoseconds(stale);
    return lease;
  } catch (...) {  // std::bad_alloc while decoding a string
    return std::nullopt;
  }
}

// Writes one lease record: compact JSON and a newline. Identity fields that
// are empty or zero are left out, as the Go package writes them.
inline std::string format_lease(const Lease& lease) {
  std::string out;
  out.reserve(160 + lease.owner_id.size() + lease.host.size() + lease.boot_id.size());
  out += "{\"version\":";
  out += std::to_string(lease.version);
  out += ",\"ownerID\":";
  detail::append_json_string(out, lease.owner_id);
  out += ",\"pid\":";
  out += std::to_string(lease.pid);
  out += ",\"lastHeartbeatUnixNano\":";
  out += std::to_string(detail::unix_nanos(lease.heartbeat));
  if (!lease.host.empty()) {
    out += ",\"host\":";
    detail::append_json_string(out, lease.host);
  }
  if (!lease.boot_id.empty()) {
    out += ",\"bootID\":";
    detail::append_json_string(out, lease.boot_id);
  }
  if (lease.pid_namespace != 0) {
    out += ",\"pidNamespace\":";
    out += std::to_string(lease.pid_namespace);
  }
  if (lease.start_time != 0) {
    out += ",\"startTime\":";
    out += std::to_string(lease.start_time);
  }
  if (lease.stale_threshold.count() != 0) {
    out += ",\"staleThresholdNano\":";
    out += std::to_string(lease.stale_threshold.count());
  }
  out += "}\n";
  return out;
}

// Thrown when a live owner holds the lock. code() is the lock's held_error.
// (It sits here, not with the other errors, because it carries a Lease.)
class lock_held_error : public std::filesystem::filesystem_error {
 public:
  lock_held_error(const std::filesystem::path& lock_file, std::error_code code,
                  std::optional<Lease> holder, std::chrono::nanoseconds age)
      : std::filesystem::filesystem_error(describe(holder, age), lock_file, code),
        holder_(std::make_shared<const std::optional<Lease>>(std::move(holder))) {}

  // The holder's record, or empty when the lock file is not a valid record.
  const std::optional<Lease>& holder() const noexcept { return *holder_; }

 private:
  static std::string describe(const std::optional<Lease>& holder, std::chrono::nanoseconds age) {
    const auto age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(age).count();
    if (!holder)
      return "acquire lock file: not a valid lease record, modified " + std::to_string(age_ms) +
             " ms ago";
    std::string text = "acquire lock file: held by pid " + std::to_string(holder->pid);
    if (!holder->host.empty()) text += " on host " + holder->host;
    text += ", last heartbeat " + std::to_string(age_ms) + " ms ago";
    return text;
  }

  std::shared_ptr<const std::optional<Lease>> holder_;  // shared: copying must not throw
};

}  // namespace lockfile

// ===========================================================================
// Platform layer: every POSIX call the library makes lives here. Functions
// report errno through std::error_code and never throw.
// ===========================================================================
namespace lockfile::detail {

inline std::error_code errno_code(int value = errno) { return {value, std::system_category()}; }

// EOPNOTSUPP and ENOTSUP: one value on Linux, two elsewhere (BSDs, macOS).
inline bool not_supported(int error) {
  return error == EOPNOTSUPP || error == ENOTSUP;  // NOLINT(misc-redundant-expression): equal on Linux only
}

using steady_clock_time = std::chrono::steady_clock::time_point;

// Owns one file descriptor; closes it on destruction.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);  // even on EINTR the descriptor is gone (Linux)
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Every open goes through here: never leak the descriptor into an exec'd
// child, and never follow a symbolic link at the last component of a lock
// file's name. (The lock's directory may be reached through one: /var/lock
// is a link to /run/lock on many systems.)
enum class last_component { no_follow, follow };

inline int open_file(const char* path, int flags, mode_t mode = 0,
                     last_component last = last_component::no_follow) {
  if (last == last_component::no_follow) flags |= O_NOFOLLOW;
  int fd = -1;
  do fd = ::open(path, flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  return fd;
}

// For the files we create: every renewal reads our own file after writing
// it, and under relatime each such read would also write the inode's atime.
// (Permitted to the file's owner, which the creator is.)
#if defined(O_NOATIME)
inline constexpr int no_atime = O_NOATIME;
#else
inline constexpr int no_atime = 0;
#endif

inline mode_t to_mode(std::filesystem::perms perms) {
  return static_cast<mode_t>(perms & std::filesystem::perms::mask);
}

struct file_identity {
  dev_t device = 0;
  ino_t inode = 0;
  friend bool operator==(const file_identity&, const file_identity&) = default;
};

struct file_facts {
  file_identity identity;
  bool regular = false;
  bool directory = false;
  nlink_t links = 0;
  std::chrono::system_clock::time_point modified;
};

inline file_facts facts_from(const struct stat& st) {
  file_facts facts;
  facts.identity = {st.st_dev, st.st_ino};
  facts.regular = S_ISREG(st.st_mode);
  facts.directory = S_ISDIR(st.st_mode);
  facts.links = st.st_nlink;
#if defined(__APPLE__)
  const auto& mtime = st.st_mtimespec;
#else
  const auto& mtime = st.st_mtim;
#endif
  facts.modified = from_unix_nanos(static_cast<std::int64_t>(mtime.tv_sec) * 1'000'000'000 +
                                   mtime.tv_nsec);
  return facts;
}

inline std::error_code stat_fd(int fd, file_facts& out) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_code();
  out = facts_from(st);
  return {};
}

// lstat: a symbolic link at the path is reported as such, never followed.
inline std::error_code stat_path(const std::filesystem::path& path, file_facts& out) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno_code();
  out = facts_from(st);
  return {};
}

// fstat that does not trust the client's attribute cache: on a network file
// system (and FUSE) fstat may answer from a cache, or for the name rather
// than the open file. statx with AT_STATX_FORCE_SYNC asks the server.
inline std::error_code stat_fd_fresh(int fd, file_facts& out) {
#if defined(__linux__) && defined(STATX_BASIC_STATS) && defined(AT_STATX_FORCE_SYNC)
  struct statx st {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &st) == 0) {
    out.identity = {makedev(st.stx_dev_major, st.stx_dev_minor), static_cast<ino_t>(st.stx_ino)};
    out.regular = S_ISREG(st.stx_mode);
    out.directory = S_ISDIR(st.stx_mode);
    out.links = st.stx_nlink;
    out.modified = from_unix_nanos(static_cast<std::int64_t>(st.stx_mtime.tv_sec) * 1'000'000'000 +
                                   st.stx_mtime.tv_nsec);
    return {};
  }
  if (errno != ENOSYS) return errno_code();
#endif
  return stat_fd(fd, out);
}

// Reads from offset 0 up to limit + 1 bytes, so that "larger than limit" is
// known without reading a large file whole. The buffer starts small and
// grows: a lease record is a few hundred bytes, and zero-filling 64 KiB on
// every renewal would cost more than the read. A short read of a regular
// file means its end.
inline std::error_code read_prefix(int fd, std::string& out, std::size_t limit) {
  const std::size_t cap = limit + 1;
  out.resize(std::min<std::size_t>(cap, 1024));
  std::size_t got = 0;
  for (;;) {
    const std::size_t want = out.size() - got;
    const ssize_t n = ::pread(fd, out.data() + got, want, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      const auto ec = errno_code();
      out.clear();
      return ec;
    }
    got += static_cast<std::size_t>(n);
    if (static_cast<std::size_t>(n) < want || got == cap) break;
    out.resize(std::min(cap, out.size() * 4));
  }
  out.resize(got);
  return {};
}

inline std::error_code write_at(int fd, std::string_view bytes, off_t offset) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_code();
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
    offset += n;
  }
  return {};
}

inline std::error_code truncate_to(int fd, std::size_t size) {
  int rc = 0;
  do rc = ::ftruncate(fd, static_cast<off_t>(size));
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? std::error_code{} : errno_code();
}

enum class flock_result { locked, busy, unsupported, failed };

// flock, not fcntl locks: those belong to the process, so two locks in one
// process would not exclude each other.
inline flock_result try_flock(int fd, std::error_code& ec) {
  int rc = 0;
  do rc = ::flock(fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc == 0) return flock_result::locked;
  if (errno == EWOULDBLOCK) return flock_result::busy;
  ec = errno_code();
  if (errno == ENOLCK || not_supported(errno)) return flock_result::unsupported;
  return flock_result::failed;
}

inline void unlock_flock(int fd) { ::flock(fd, LOCK_UN); }

inline std::error_code remove_name(const std::filesystem::path& path) {
  return ::unlink(path.c_str()) == 0 ? std::error_code{} : errno_code();
}

// Unlinks path if it still names fd's inode, checked under fd's flock (the
// lock's removal rule) — for undoing our own just-created file. Busy or
// changed: left alone, to go stale.
inline void unlink_if_names(int fd, const std::filesystem::path& path) {
  std::error_code ec;
  const auto locked = try_flock(fd, ec);
  if (locked == flock_result::busy || locked == flock_result::failed) return;
  file_facts mine;
  file_facts named;
  if (!stat_fd(fd, mine) && !stat_path(path, named) && mine.identity == named.identity) remove_name(path);
  if (locked == flock_result::locked) unlock_flock(fd);
}

// mkdir -p: every missing level is created with mode (the umask applies).
// NOLINTNEXTLINE(misc-no-recursion): one level per path component
inline std::error_code make_directories(const std::filesystem::path& dir, mode_t mode) {
  if (dir.empty()) return {};
  if (::mkdir(dir.c_str(), mode) == 0) return {};
  if (errno == EEXIST) return {};
  if (errno != ENOENT) return errno_code();
  const auto parent = dir.parent_path();
  if (parent == dir) return errno_code(ENOENT);
  if (auto ec = make_directories(parent, mode)) return ec;
  if (::mkdir(dir.c_str(), mode) == 0 || errno == EEXIST) return {};
  return errno_code();
}

// Which removal path a directory's file system takes (DESIGN.md "Protocol",
// step 4). On the file systems known to be local, one kernel sees every
// flock and answers stat from the inode itself. Everything else (NFS,
// SMB/CIFS, FUSE, 9p, Ceph, GFS2, OCFS2, Lustre, GPFS, and any type not
// listed here) is treated as a network file system.
enum class fs_path { local, network };

inline bool known_local_file_system(std::uint32_t magic) {
  switch (magic) {
    case 0xEF53U:      // ext2, ext3, ext4
    case 0x58465342U:  // xfs
    case 0x9123683EU:  // btrfs
    case 0x01021994U:  // tmpfs
    case 0x858458F6U:  // ramfs
    case 0x794C7630U:  // overlayfs
    case 0xF2F52010U:  // f2fs
    case 0x2FC12FC1U:  // zfs
    case 0xCA451A4EU:  // bcachefs
      return true;
    default:
      return false;
  }
}

struct fs_path_decision {
  fs_path path = fs_path::network;
  bool final = false;  // decided on dir itself, not on an ancestor
};

// Decided on dir, or while dir does not exist yet on its nearest existing
// ancestor (where it will be created). Unknown means network: the network
// path is correct everywhere, only slower.
inline fs_path_decision decide_fs_path(const std::filesystem::path& dir) {
  fs_path_decision out;
#if defined(__linux__)
  auto at = dir.empty() ? std::filesystem::path(".") : dir;
  for (bool first = true;; first = false) {
    struct statfs fs {};
    if (::statfs(at.c_str(), &fs) == 0) {
      out.path = known_local_file_system(static_cast<std::uint32_t>(fs.f_type)) ? fs_path::local
                                                                                  : fs_path::network;
      out.final = first;
      return out;
    }
    if (errno != ENOENT) return out;
    auto parent = at.parent_path();
    if (parent.empty() || parent == at) return out;
    at = std::move(parent);
  }
#else
  (void)dir;
  return out;
#endif
}

// A file that is gone: ENOENT, or ESTALE from a network file system whose
// server removed it (its file handle is no longer known). Both are
// "vanished", which callers retry.
inline std::error_code vanished_as_enoent(std::error_code ec) {
  return ec == std::errc::no_such_file_or_directory || ec.value() == ESTALE
             ? std::make_error_code(std::errc::no_such_file_or_directory)
             : ec;
}

// rename(2) for moving a file aside; ENOENT when it vanished first.
inline std::error_code move_name(const std::filesystem::path& from, const std::filesystem::path& to) {
  return ::rename(from.c_str(), to.c_str()) == 0 ? std::error_code{} : vanished_as_enoent(errno_code());
}

// Gives a moved-aside file its name back: link(), or where the file system
// has no hard links, a rename that refuses to replace. When the name has
// been taken meanwhile (EEXIST), the aside name is removed: the file's owner
// has lost the lock and learns it at its next renewal. On any other failure
// the file stays aside, for its owner's renewal to find the path gone and
// for a later sweep; removing it then would destroy a file someone renewed.
inline void put_back(const std::filesystem::path& aside, const std::filesystem::path& path) {
  if (::link(aside.c_str(), path.c_str()) == 0) {
    remove_name(aside);
    return;
  }
  int error = errno;
#if defined(__linux__) && defined(RENAME_NOREPLACE)
  if (error == EPERM || not_supported(error)) {
    if (::renameat2(AT_FDCWD, aside.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) return;
    error = errno;
  }
#endif
  if (error == EEXIST) remove_name(aside);
}

// The names in dir that start with prefix (for sweeping protocol leftovers).
inline std::vector<std::string> names_starting_with(const std::filesystem::path& dir, std::string_view prefix) {
  std::vector<std::string> names;
  const int fd = open_file(dir.c_str(), O_RDONLY | O_DIRECTORY, 0, last_component::follow);
  if (fd < 0) return names;
  DIR* listing = ::fdopendir(fd);
  if (listing == nullptr) {
    ::close(fd);
    return names;
  }
  // readdir is safe on a stream no other thread uses (POSIX.1-2008 TC2).
  while (const dirent* entry = ::readdir(listing)) {  // NOLINT(concurrency-mt-unsafe)
    const std::string_view name = entry->d_name;
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  }
  ::closedir(listing);
  return names;
}

// The protocol's own names beside a lock file, ".<name>.<middle><suffix>":
// private publication files (".tmp"), claims (".claim", ".claim.1", ...) and
// files moved aside (".reclaim"). Readers ignore them.
// (Appended piecewise: GCC 12 warns falsely on "." + std::string at -O2.)
inline std::filesystem::path protocol_name(const std::filesystem::path& lock_file, std::string_view middle,
                                           std::string_view suffix) {
  std::string leaf(1, '.');
  leaf.append(lock_file.filename().native()).append(1, '.').append(middle).append(suffix);
  return lock_file.parent_path() / leaf;
}

// The result of trying to create the lock file with a complete record.
struct publication {
  unique_fd fd;           // the lock file, open read-write, when published
  std::error_code error;  // EEXIST when someone else's file is in the way
  const char* operation = "create lock file";
  std::filesystem::path subject;  // the directory, when creating it failed
};

// Writes bytes into a file nobody can see yet and links it to path in one
// step, so that no reader ever sees a partial record from a live owner.
// The portable fallback's private file is ".<name>.<owner>.tmp" beside
// lock_file (the lock file itself, or the one a claim is for), a name
// readers ignore and sweeping recognizes.
inline publication publish_new_file(const std::filesystem::path& path, std::string_view bytes,
                                    mode_t mode, const std::filesystem::path& lock_file, std::string_view owner) {
  publication out;
  const auto dir = path.parent_path();
  auto fail = [&](const char* operation, std::error_code ec) {
    out.fd.reset();
    out.error = ec;
    out.operation = operation;
    return std::move(out);
  };

#if defined(O_TMPFILE)
  // Linux: an anonymous inode, linked to its name only once complete.
  unique_fd anonymous(open_file(dir.c_str(), O_TMPFILE | O_RDWR | no_atime, mode, last_component::follow));
  if (anonymous) {
    if (auto ec = write_at(anonymous.get(), bytes, 0)) return fail("write lock file", ec);
    const std::string proc_name = "/proc/self/fd/" + std::to_string(anonymous.get());
    if (::linkat(AT_FDCWD, proc_name.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      out.fd = std::move(anonymous);
      return out;
    }
    const int link_errno = errno;
    if (link_errno == EEXIST) return fail("create lock file", errno_code(link_errno));
    // Without /proc or without link support, fall through to a named file.
    if (link_errno != ENOENT && link_errno != EPERM && !not_supported(link_errno))
      return fail("create lock file", errno_code(link_errno));
  } else if (errno != EISDIR && errno != EINVAL && !not_supported(errno)) {
    return fail("create lock file", errno_code());
  }
#endif

  // Portable: a private named file, linked into place, then unnamed again.
  const auto private_name = protocol_name(lock_file, owner, ".tmp");
  unique_fd named(open_file(private_name.c_str(), O_RDWR | O_CREAT | O_EXCL | no_atime, mode));
  if (!named) return fail("create lock file", errno_code());
  if (auto ec = write_at(named.get(), bytes, 0)) {
    named.reset();
    remove_name(private_name);
    return fail("write lock file", ec);
  }
  // Closed before it is linked: an NFS client sends the written bytes to
  // the server at close, so another host never reads the linked name empty;
  // and a network client keeps a file unlinked while open under a hidden
  // name (".nfsXXXX", ".fuse_hidden...") until it is closed.
  named.reset();
  if (::link(private_name.c_str(), path.c_str()) == 0) {
    remove_name(private_name);
    // The lock's descriptor is opened through its own name (FUSE file
    // systems on libfuse's path API tie a descriptor, and its flock, to the
    // name it was opened by). Nobody can take a record this fresh from us
    // in between.
    out.fd.reset(open_file(path.c_str(), O_RDWR | no_atime));
    if (!out.fd) {
      const auto ec = errno_code();
      remove_name(path);
      return fail("open lock file", ec);
    }
    return out;
  }
  const int link_errno = errno;
  remove_name(private_name);
  if (link_errno != EPERM && !not_supported(link_errno))
    return fail("create lock file", errno_code(link_errno));

  // No hard links here (some FUSE and SMB mounts): create in place. Readers
  // may see the file empty for a moment; the invalid-file rule covers that.
  unique_fd direct(open_file(path.c_str(), O_RDWR | O_CREAT | O_EXCL | no_atime, mode));
  if (!direct) return fail("create lock file", errno_code());
  if (auto ec = write_at(direct.get(), bytes, 0)) {
    unlink_if_names(direct.get(), path);
    return fail("write lock file", ec);
  }
  out.fd = std::move(direct);
  return out;
}

// Publishes, creating missing parent directories only when the first try
// says they are missing (the common case costs no mkdir).
inline publication publish(const std::filesystem::path& path, std::string_view bytes,
                           mode_t file_mode, mode_t directory_mode,
                           std::string_view owner) {
  auto result = publish_new_file(path, bytes, file_mode, path, owner);
  if (result.error != std::errc::no_such_file_or_directory) return result;
  if (auto ec = make_directories(path.parent_path(), directory_mode)) {
    result.error = ec;
    result.operation = "create lock directory";
    result.subject = path.parent_path();
    return result;
  }
  return publish_new_file(path, bytes, file_mode, path, owner);
}

// A look at someone else's lock file: its descriptor, identity and bytes.
struct observed_file {
  unique_fd fd;
  file_facts facts;
  std::string bytes;       // at most max_record_bytes + 1
  std::error_code error;   // ENOENT: it vanished, which callers retry
  const char* operation = "read lock file";
};

// On a network file system (fresh) the attributes come from the server, not
// from a cache; the file is opened anew either way, so that its bytes are
// read fresh too (NFS close-to-open consistency, FUSE's open). A file that
// vanishes between open and read (ENOENT, or ESTALE from a server that
// removed it) is reported as ENOENT: vanished, to be retried.
inline observed_file observe_file(const std::filesystem::path& path, fs_path kind = fs_path::local) {
  observed_file out;
  // Read-write where permitted: NFS emulates flock with POSIX locks, which
  // need a writable descriptor. O_NONBLOCK: a FIFO at the path must not hang us.
  out.fd.reset(open_file(path.c_str(), O_RDWR | O_NONBLOCK));
  if (!out.fd && (errno == EACCES || errno == EROFS || errno == EPERM || errno == ETXTBSY))
    out.fd.reset(open_file(path.c_str(), O_RDONLY | O_NONBLOCK));
  if (!out.fd) {
    out.error = vanished_as_enoent(errno_code());
    out.operation = "open lock file";
    return out;
  }
  out.error = kind == fs_path::network ? stat_fd_fresh(out.fd.get(), out.facts) : stat_fd(out.fd.get(), out.facts);
  if ((out.error = vanished_as_enoent(out.error))) return out;
  if (out.facts.directory) {
    out.error = errno_code(EISDIR);
    return out;
  }
  if (!out.facts.regular) {
    out.error = errno_code(EINVAL);
    out.operation = "read lock file (not a regular file)";
    return out;
  }
  out.error = vanished_as_enoent(read_prefix(out.fd.get(), out.bytes, max_record_bytes));
  return out;
}

// For inspection: a file that was opened and then vanished (ENOENT or
// ESTALE from statx or read; on a network file system possibly for a
// moment only) is looked at again, a few times, before it is called gone.
inline observed_file observe_settled(const std::filesystem::path& path, fs_path kind) {
  auto seen = observe_file(path, kind);
  for (int again = 0; again < 8 && seen.error == std::errc::no_such_file_or_directory && seen.fd; ++again)
    seen = observe_file(path, kind);
  return seen;
}

// Reads a small text file whole (for /proc); empty on any failure.
inline std::string read_small_file(const char* path) {
  unique_fd fd(open_file(path, O_RDONLY));
  std::string text;
  if (!fd || read_prefix(fd.get(), text, 4096)) return {};
  return text;
}

inline std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0) return {};
  return buffer;
}

inline std::string boot_id() {
#if defined(__linux__)
  auto text = read_small_file("/proc/sys/kernel/random/boot_id");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
#else
  return {};
#endif
}

inline std::uint64_t pid_namespace() {
#if defined(__linux__)
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
#else
  return 0;
#endif
}

// What /proc/PID/stat says of a process: its state letter and start time.
struct proc_stat {
  char state = '?';
  std::uint64_t start_time = 0;
};

// The command name (field 2) may hold spaces and parentheses: fields after it
// are counted from the last ')'.
inline std::optional<proc_stat> parse_proc_stat(std::string_view text) {
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  text.remove_prefix(close + 1);
  proc_stat out;
  for (int field = 3; field <= 22; ++field) {
    const auto begin = text.find_first_not_of(' ');
    if (begin == std::string_view::npos) return std::nullopt;
    text.remove_prefix(begin);
    const auto end = std::min(text.find(' '), text.size());
    const auto token = text.substr(0, end);
    if (field == 3) out.state = token.empty() ? '?' : token.front();
    if (field == 22) {
      const auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), out.start_time);
      if (ec != std::errc{} || ptr != token.data() + token.size()) return std::nullopt;
    }
    text.remove_prefix(end);
  }
  return out;
}

// Whether /proc is the proc file system of our own PID namespace. In a new
// PID namespace without its own /proc mount (unshare --pid --fork without
// --mount-proc), /proc/PID names some other process of the outer namespace.
inline bool proc_is_ours() {
#if defined(__linux__)
  char target[32] = {};
  const ssize_t n = ::readlink("/proc/self", target, sizeof target - 1);
  if (n <= 0) return false;
  int pid = 0;
  const auto [end, ec] = std::from_chars(target, target + n, pid);
  return ec == std::errc{} && end == target + n && pid == static_cast<int>(::getpid());
#else
  return false;
#endif
}

inline std::optional<proc_stat> read_proc_stat(int pid) {
#if defined(__linux__)
  if (!proc_is_ours()) return std::nullopt;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const auto text = read_small_file(path.c_str());
  if (text.empty()) return std::nullopt;
  return parse_proc_stat(text);
#else
  (void)pid;
  return std::nullopt;
#endif
}

enum class liveness { alive, dead };

// Is the process that wrote a record with our boot id and PID namespace still
// running? Dead only on proof: /proc/PID gone (confirmed by kill), a zombie,
// or a different start time (the pid was reused). Anything unclear: alive.
// The number of live threads of a process (/proc/PID/status), 0 if unknown.
inline int thread_count(int pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  const auto text = read_small_file(path.c_str());
  const auto at = text.find("\nThreads:");
  if (at == std::string::npos) return 0;
  const auto begin = text.find_first_not_of(" \t", at + 9);
  int count = 0;
  if (begin != std::string::npos) std::from_chars(text.data() + begin, text.data() + text.size(), count);
  return count;
}

inline liveness probe_process(int pid, std::uint64_t start_time) {
  if (const auto stat = read_proc_stat(pid)) {
    // A zombie leader whose other threads still run (the main thread called
    // pthread_exit) is alive: only a process with no live thread is dead.
    if (stat->state == 'X') return liveness::dead;
    if (stat->state == 'Z' && thread_count(pid) <= 1) return liveness::dead;
    if (start_time != 0 && stat->start_time != start_time) return liveness::dead;
    return liveness::alive;
  }
  // /proc has no entry, or cannot be read (hidepid, not Linux): only the
  // kernel's own "no such process" counts as proof.
  if (::kill(pid, 0) != 0 && errno == ESRCH) return liveness::dead;
  return liveness::alive;
}

inline int current_pid() { return static_cast<int>(::getpid()); }

// The identity this process writes into its records. Host, boot id and PID
// namespace are read once per process; pid and start time again after fork().
struct process_identity {
  int pid = 0;
  std::uint64_t start_time = 0;
  std::string host;
  std::string boot_id;
  std::uint64_t pid_namespace = 0;
};

inline const process_identity& self_identity() {
  // No lock: a mutex held by another thread at fork() would stay locked in
  // the child. Host facts never change; pid and start time are per process
  // and cached per thread, checked against getpid() on every call.
  struct host_facts {
    std::string host = host_name();
    std::string boot = boot_id();
    std::uint64_t pid_space = pid_namespace();
  };
  static const host_facts host;
  thread_local process_identity cached;
  const int pid = current_pid();
  if (cached.pid != pid) {
    const auto stat = read_proc_stat(pid);
    cached.start_time = stat ? stat->start_time : 0;
    cached.host = host.host;
    cached.boot_id = host.boot;
    cached.pid_namespace = host.pid_space;
    cached.pid = pid;
  }
  return cached;
}

// Names the calling thread, as ps, top and gdb show it.
inline void name_this_thread([[maybe_unused]] const char* name) {
#if defined(__linux__)
  ::pthread_setname_np(::pthread_self(), name);
#endif
}

// Blocks every signal in the calling thread for its lifetime; threads
// started meanwhile inherit the full mask, so the library's threads never
// take a signal the application meant for itself (a SIGTERM it reads from a
// signalfd, say).
class signals_blocked {
 public:
  signals_blocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous_);
  }
  ~signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  signals_blocked(const signals_blocked&) = delete;
  signals_blocked& operator=(const signals_blocked&) = delete;

 private:
  sigset_t previous_{};
};

// What a waiting lock sleeps on between attempts: a change to the lock
// file's directory entry (Linux: inotify on the parent directory, filtered
// to the lock's name), the exit of a holder (Linux: a pidfd), or a wake-up
// from this process (a stop request, a release by another thread). Its
// descriptors live as long as the lock: closing an inotify instance costs
// milliseconds (an RCU grace period), so a lock() must not make one per call.
class wait_channel {
 public:
  explicit wait_channel(const std::filesystem::path& lock_file)
      : directory_(lock_file.parent_path()), name_(lock_file.filename().string()) {
#if defined(__linux__)
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    inotify_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
#else
    int fds[2];
    if (::pipe(fds) == 0) {  // no pipe2 everywhere; the CLOEXEC window is brief
      for (const int fd : fds) {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        ::fcntl(fd, F_SETFL, O_NONBLOCK);
      }
      wake_read_.reset(fds[0]);
      wake_.reset(fds[1]);
    }
#endif
  }

  // Watches the lock file's directory; without it (no inotify, or the watch
  // failed) waiting falls back to its poll period.
  // (A new holder's link raises no wake-up: waiters wake to free names.)
  void watch() {
#if defined(__linux__)
    if (!inotify_) return;
    watching_ = ::inotify_add_watch(inotify_.get(), directory_.c_str(),
                                    IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                                        IN_MOVE_SELF | IN_ONLYDIR) >= 0;
#endif
  }

  // Wakes a thread sleeping in wait_until (safe from any thread).
  void notify() {
    if (!wake_) return;
#if defined(__linux__)
    const std::uint64_t one = 1;
    // A failed write means a wake-up is pending already.
    [[maybe_unused]] const ssize_t written = ::write(wake_.get(), &one, sizeof one);
#else
    const char one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake_.get(), &one, 1);  // full pipe: one is pending
#endif
  }

  // Forgets wake-ups and directory events seen so far: whatever they
  // announced, the next attempt sees for itself.
  void drain() {
    char buffer[4096];
    const int wake_read = wake_read_ ? wake_read_.get() : wake_.get();
    if (wake_read >= 0)
      while (::read(wake_read, buffer, sizeof buffer) > 0) {
      }
    if (inotify_)
      while (::read(inotify_.get(), buffer, sizeof buffer) > 0) {
      }
  }

  // Sleeps until the deadline, a wake-up, a directory event naming the lock
  // file, or (when holder_fd >= 0) the holder's exit.
  void wait_until(steady_clock_time deadline, int holder_fd) {
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      const int timeout = static_cast<int>(std::min<long long>(left, INT_MAX));
      pollfd fds[3];
      nfds_t count = 0;
      const int wake_read = wake_read_ ? wake_read_.get() : wake_.get();
      if (wake_read >= 0) fds[count++] = {wake_read, POLLIN, 0};
      if (watching_) fds[count++] = {inotify_.get(), POLLIN, 0};
      if (holder_fd >= 0) fds[count++] = {holder_fd, POLLIN, 0};
      const int ready = ::poll(fds, count, timeout);
      if (ready < 0 && errno != EINTR) return;
      if (ready <= 0) continue;
      for (nfds_t i = 0; i < count; ++i) {
        if (fds[i].revents == 0) continue;
        if (fds[i].fd != inotify_.get()) return;  // woken, or the holder exited
        if (names_lock_file()) return;
      }
    }
  }

 private:
  // Reads pending inotify events; true when one concerns the lock file (or
  // the directory itself went away, which ends the watch).
  bool names_lock_file() {
#if defined(__linux__)
    alignas(inotify_event) char buffer[4096];
    bool relevant = false;
    ssize_t n = 0;
    while ((n = ::read(inotify_.get(), buffer, sizeof buffer)) > 0) {
      for (char* at = buffer; at < buffer + n;) {
        // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the kernel wrote one here
        const auto* event = reinterpret_cast<const inotify_event*>(at);
        if (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_Q_OVERFLOW)) {
          relevant = true;
          if (event->mask & IN_IGNORED) watching_ = false;
        } else if (event->len > 0 && name_ == event->name) {
          relevant = true;
        }
        at += sizeof(inotify_event) + event->len;
      }
    }
    return relevant;
#else
    return true;
#endif
  }

  const std::filesystem::path directory_;
  const std::string name_;
  unique_fd wake_;       // eventfd (Linux) or the write end of a pipe
  unique_fd wake_read_;  // the read end of that pipe (not Linux)
  unique_fd inotify_;
  std::atomic<bool> watching_{false};
};

// A descriptor that becomes readable when the process with this pid exits
// (Linux pidfd), checked against its start time after opening so that a
// reused pid is not mistaken for the holder. -1 when unavailable, or when
// the pid no longer names the holder (the next attempt will see it dead).
inline unique_fd open_holder_exit_fd(int pid, std::uint64_t start_time) {
#if defined(__linux__) && defined(SYS_pidfd_open)
  unique_fd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));  // always close-on-exec
  if (!fd) return fd;
  const auto stat = read_proc_stat(pid);
  if (!stat || (start_time != 0 && stat->start_time != start_time)) return unique_fd{};
  // Already readable: it has exited (an unreaped zombie that an override
  // still calls alive). Waiting on it would return at once, every time.
  pollfd exited{fd.get(), POLLIN, 0};
  if (::poll(&exited, 1, 0) > 0) return unique_fd{};
  return fd;
#else
  (void)pid;
  (void)start_time;
  return unique_fd{};
#endif
}

// Unique across processes, hosts and calls: pid, wall time, a counter and
// 64 random bits.
//
// The random bits come from a generator seeded from std::random_device
// (which may cost a system call or a slow instruction per use) once per
// thread, and again in a forked child, which would otherwise repeat its
// parent's bits.
inline std::string new_owner_id(int pid, std::chrono::system_clock::time_point now) {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 bits;  // NOLINT(cert-msc32-c,cert-msc51-cpp): seeded below before any use
  thread_local int seeded_for = 0;
  if (seeded_for != pid) {
    std::random_device entropy;
    std::seed_seq seed{entropy(), entropy(), entropy(), entropy()};
    bits.seed(seed);
    seeded_for = pid;
  }
  const std::uint64_t random = bits();
  char hex[17] = {};
  std::to_chars(hex, hex + 16, random, 16);
  return std::to_string(pid) + "-" + std::to_string(unix_nanos(now)) + "-" +
         std::to_string(++counter) + "-" + hex;
}

}  // namespace lockfile::detail

// ===========================================================================
// Judging a lock file: the rules of DESIGN.md "Protocol" step 3, shared by
// acquire attempts, waiting and inspect().
// ===========================================================================
namespace lockfile::detail {

using steady_clock = std::chrono::steady_clock;
using system_clock = std::chrono::system_clock;

// What one lock has seen of a lock file's bytes over time, on its own
// steady clock. It lets a waiting lock judge by observation rather than by
// another host's timestamps.
struct observation_memory {
  bool valid = false;
  bool saw_change = false;             // the bytes changed while we watched
  std::string bytes;
  steady_clock::time_point first_seen; // when the current bytes were first seen

  void record(const std::string& now_bytes, steady_clock::time_point now) {
    if (valid && now_bytes == bytes) return;
    saw_change = valid;
    valid = true;
    bytes = now_bytes;
    first_seen = now;
  }
  void forget() { *this = observation_memory{}; }
};

struct verdict {
  LockStatus status;
  // When the file, if its bytes stay as they are, becomes stale (steady time);
  // meaningful when held.
  steady_clock::time_point stale_at;
};

inline std::chrono::nanoseconds age_since(system_clock::time_point now,
                                          system_clock::time_point then) {
  return std::max(std::chrono::nanoseconds::zero(),
                  std::chrono::duration_cast<std::chrono::nanoseconds>(now - then));
}

// A record from our own boot and PID namespace names a pid we can probe.
inline bool same_pid_space(const Lease& lease, const process_identity& self) {
  return !lease.boot_id.empty() && lease.boot_id == self.boot_id && lease.pid_namespace != 0 &&
         lease.pid_namespace == self.pid_namespace;
}

inline bool owner_is_dead(const Lease& lease, const process_identity& self, const Options& options) {
  if (!same_pid_space(lease, self)) return false;
  if (options.process_appears_alive) return !options.process_appears_alive(lease.pid);
  return probe_process(lease.pid, lease.start_time) == liveness::dead;
}

inline verdict judge(const std::string& bytes, const file_facts& facts, const Options& options,
                     const observation_memory* memory, const process_identity& self) {
  using std::chrono::nanoseconds;
  const auto wall_now = system_clock::now();
  const auto steady_now = steady_clock::now();
  verdict out;
  out.status.state = LockState::held;
  if (bytes.size() <= max_record_bytes) out.status.lease = parse_lease(bytes);
  const auto& lease = out.status.lease;

  // Which threshold applies, and how old the file is by the timestamps.
  nanoseconds threshold;
  nanoseconds age;
  if (lease) {
    threshold = std::max<nanoseconds>(options.lease_stale_threshold,
                                      std::min(lease->stale_threshold, max_record_threshold));
    const bool far_future = lease->heartbeat - wall_now > threshold;
    // A heartbeat far in the future (skew, corruption) must not block forever:
    // judge by the file's modification time, which follows each renewal.
    age = age_since(wall_now, far_future ? facts.modified : lease->heartbeat);
  } else {
    threshold = options.invalid_lock_stale_threshold;
    age = age_since(wall_now, facts.modified);
  }
  out.status.age = age;

  if (lease && owner_is_dead(*lease, self, options)) {
    out.status.state = LockState::stale;
    return out;
  }
  const bool watching = memory != nullptr && memory->valid && memory->bytes == bytes;
  if (watching) {
    if (steady_now - memory->first_seen >= threshold) {  // stale by observation
      out.status.state = LockState::stale;
      return out;
    }
    out.stale_at = memory->first_seen + threshold;
    if (memory->saw_change) return out;  // alive by observation, whatever the timestamps say
  }
  if (age >= threshold) {  // the Go rule: all a single try has to go on
    out.status.state = LockState::stale;
    return out;
  }
  const auto by_timestamps = steady_now + (threshold - age);
  out.stale_at = watching ? std::min(out.stale_at, by_timestamps) : by_timestamps;
  return out;
}

}  // namespace lockfile::detail

// ===========================================================================
// Heartbeat service: one thread per process renews every held lease; a second
// thread runs on_lease_lost callbacks, so a slow callback delays nobody's
// renewal. Both start with the first acquisition, and again in a forked child.
// ===========================================================================
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

// ===========================================================================
// PIDLock: acquire, release and waiting, built on the pieces above.
// ===========================================================================
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
  }

  PIDLock(const PIDLock&) = delete;
  PIDLock& operator=(const PIDLock&) = delete;

  // Releases if held; never throws. (An on_lease_lost callback running at
  // this moment may re-acquire; that acquisition is released too.)
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

  // Removes the lock file if it is still ours. A no-op when not held, after
  // the lease was lost, and in a forked child (the parent's file stays).
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
    return held_ && held_->active.load() && held_->owner_process == detail::current_pid();
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
    return held_ != nullptr;
  }

  // The waiting calls' channel, made on first use and kept for the life of
  // the lock.
  detail::wait_channel& channel() {
    std::lock_guard state(state_mutex_);
    if (!channel_) channel_ = std::make_unique<detail::wait_channel>(absolute_);
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
      if (held_ && held_->owner_process != detail::current_pid()) abandon_after_fork();
      if (held_ && held_->active.load()) return with(attempt_result::self_held);
      held_.reset();  // a lost lease: acquire anew
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
    const int pid = lease.pid;  // ours, from self_identity()
    auto held = std::make_shared<detail::held_lease>();
    held->kind = file_system();
    detail::file_facts facts;
    // The inode identifies our file on local file systems only; on network
    // ones the bytes do.
    if (held->kind == detail::fs_path::local) {
      if (auto ec = detail::stat_fd(fd.get(), facts)) {
        // Without its identity we cannot fence; but we published it an
        // instant ago, and no contender may reclaim a lease this fresh.
        detail::remove_name(absolute_);
        return failure("stat lock file", ec);
      }
    }
    held->fd = std::move(fd);
    held->path = absolute_;
    held->identity = facts.identity;
    held->lease = std::move(lease);
    held->set_record(std::move(record));
    held->interval = options_.lease_heartbeat_interval;
    held->stale_threshold = options_.lease_stale_threshold;
    held->last_renewed = std::chrono::steady_clock::now();
    held->owner_process = pid;
    held->on_lost = options_.on_lease_lost;
    if (auto ec = detail::heartbeat_service::instance(pid).add(held)) {
      // Without renewal the lease would silently expire: undo the acquisition.
      remove_if(held->kind, held->fd, held->identity, held->record,
                [&](const std::string& bytes) { return bytes == held->record; });
      return failure("start heartbeat thread", ec);
    }
    memory_.forget();
    std::lock_guard state(state_mutex_);
    held_ = std::move(held);
    return with(attempt_result::acquired);
  }

  // In a forked child the parent's lease is not ours: forget it without
  // touching the file, the parent's service, or a mutex that a parent thread
  // may have held at fork time (so the entry is deliberately leaked).
  void abandon_after_fork() {
    ::close(held_->fd.get());
    new std::shared_ptr<detail::held_lease>(std::move(held_));
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
    const int pid = detail::current_pid();
    std::shared_ptr<detail::held_lease> held;
    {
      std::lock_guard state(state_mutex_);
      if (!held_) return "";
      if (held_->owner_process != pid) {
        abandon_after_fork();
        return "";
      }
      held = held_;
    }
    // A queued on_lease_lost for this lease is dropped; a running one is
    // awaited (it may itself call release(), which does not wait).
    auto& service = detail::heartbeat_service::instance(pid);
    service.cancel_callbacks(held.get());
    std::lock_guard guard(op_mutex_);
    {
      std::lock_guard state(state_mutex_);
      if (held_ != held) return "";  // released by another thread meanwhile
      held_.reset();
      if (channel_) channel_->notify();  // another thread of ours may wait for this object
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
      if (!held->active.exchange(false)) {       // lost earlier: the file is not ours
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
    events.watch();  // before the first attempt, so no release in between is missed
    std::stop_callback wake_on_stop(stop, [&events] { events.notify(); });
    const auto& self = detail::self_identity();
    for (;;) {
      if (stop.stop_requested()) return false;
      events.drain();
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
  mutable std::mutex op_mutex_;     // one acquire, release or inspect at a time
  mutable std::mutex state_mutex_;  // guards held_; held() never waits for an acquire
  std::shared_ptr<detail::held_lease> held_;
  detail::observation_memory memory_;
  std::error_code removal_error_;
  const char* removal_operation_ = "remove stale lock file";
  mutable std::optional<detail::fs_path> fs_path_;  // guarded by op_mutex_
  std::unique_ptr<detail::wait_channel> channel_;  // guarded by state_mutex_; made by waiting
};

}  // namespace lockfile

// ===========================================================================
// Inspection: a lock file's state for anyone, without taking the lock.
// ===========================================================================
namespace lockfile {

// Judges the lock file exactly as a single acquire attempt would; changes
// nothing. Throws filesystem_error when the file cannot be read.
inline LockStatus inspect(const std::filesystem::path& lock_file, const Options& options) {
  const auto kind = detail::decide_fs_path(std::filesystem::absolute(lock_file).parent_path()).path;
  auto seen = detail::observe_settled(lock_file, kind);
  if (seen.error == std::errc::no_such_file_or_directory) return {};
  if (seen.error) throw std::filesystem::filesystem_error(seen.operation, lock_file, seen.error);
  return detail::judge(seen.bytes, seen.facts, options, nullptr, detail::self_identity()).status;
}

// Which removal path a lock file takes (README, "Network file systems").
// local: its directory is on a file system known to be local (ext2/3/4, xfs,
// btrfs, tmpfs, ramfs, overlayfs, f2fs, zfs, bcachefs), where flock and stat
// are one kernel's. network: anything else (NFS, SMB/CIFS, FUSE, 9p, Ceph,
// GFS2, OCFS2, Lustre, GPFS, unknown types, and every system but Linux),
// where removal goes through claim files and identity is decided by bytes
// read fresh. A directory that does not exist yet is decided by its nearest
// existing ancestor.
enum class FileSystemKind { local, network };

inline FileSystemKind file_system_kind(const std::filesystem::path& lock_file) {
  const auto decision = detail::decide_fs_path(std::filesystem::absolute(lock_file).parent_path());
  return decision.path == detail::fs_path::local ? FileSystemKind::local : FileSystemKind::network;
}

}  // namespace lockfile

#endif  // LOCKFILE_LOCKFILE_HPP
