// Lease record: the on-disk format (one line of compact JSON, the Go package's
// schema version 1), its strict bounded parser, its writer, and the types that
// describe a lock file's state to callers.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_RECORD_HPP
#define LOCKFILE_DETAIL_RECORD_HPP

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
  std::uint64_t fencing_token = 0;    // fencingToken (Options::fencing), 0 = none

  friend bool operator==(const Lease&, const Lease&) = default;
};

// foreign: the file at the path is not a lease (someone's data); it is never
// modified or removed.
enum class LockState { free, held, stale, foreign };

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
      f_fencing = 1u << 9,
    };
    static constexpr std::pair<std::string_view, field> known[] = {
        {"version", f_version}, {"ownerID", f_owner}, {"pid", f_pid},
        {"lastHeartbeatUnixNano", f_heartbeat}, {"host", f_host}, {"bootID", f_boot},
        {"pidNamespace", f_pidns}, {"startTime", f_start}, {"staleThresholdNano", f_stale},
        {"fencingToken", f_fencing},
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
            case f_fencing: ok = in.read_integer(lease.fencing_token); break;
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

namespace detail {

// What the bytes at a lock path are (DESIGN.md "Errors and bad input"):
// valid: a lease record. invalid: what a crashed writer of this format (ours,
// or the Go package's create-then-write) can leave behind, reclaimed once
// old. foreign: anything else, somebody's data, never modified or removed.
enum class lock_bytes { valid, invalid, foreign };

inline bool is_lease_key(std::string_view key) {
  return key == "version" || key == "ownerID" || key == "pid" || key == "lastHeartbeatUnixNano";
}

// For bytes that are not a valid record: invalid or foreign. bytes may be a
// prefix (at most max_record_bytes + 1 are ever read).
inline lock_bytes classify_non_record(std::string_view bytes) noexcept {
  // Empty, blank, or NUL bytes (a crash after the size was set but before
  // the data reached the disk).
  if (bytes.find_first_not_of(std::string_view(" \t\n\r\0", 5)) == std::string_view::npos)
    return lock_bytes::invalid;
  // A JSON object, complete or cut short, whose first key is a lease key (or
  // is cut short inside what may be one): a record written in part, or
  // written by a version of the format that this one does not accept.
  std::size_t at = bytes.find_first_not_of(" \t\n\r");
  if (bytes[at] != '{') return lock_bytes::foreign;
  at = bytes.find_first_not_of(" \t\n\r", at + 1);
  if (at == std::string_view::npos) return lock_bytes::invalid;  // "{" and no more
  if (bytes[at] != '"') return lock_bytes::foreign;
  const auto key_begin = at + 1;
  const auto key_end = bytes.find_first_of("\"\\", key_begin);
  if (key_end == std::string_view::npos) {  // cut short inside the first key
    const auto part = bytes.substr(key_begin);
    for (const std::string_view key : {"version", "ownerID", "pid", "lastHeartbeatUnixNano"})
      if (key.substr(0, part.size()) == part) return lock_bytes::invalid;
    return lock_bytes::foreign;
  }
  if (bytes[key_end] != '"') return lock_bytes::foreign;  // an escape: not one of ours
  return is_lease_key(bytes.substr(key_begin, key_end - key_begin)) ? lock_bytes::invalid : lock_bytes::foreign;
}

inline lock_bytes classify_lock_bytes(std::string_view bytes) noexcept {
  if (bytes.size() <= max_record_bytes && parse_lease(bytes)) return lock_bytes::valid;
  return classify_non_record(bytes);
}

}  // namespace detail

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
  if (lease.fencing_token != 0) {
    out += ",\"fencingToken\":";
    out += std::to_string(lease.fencing_token);
  }
  out += "}\n";
  return out;
}

// Thrown when a live owner holds the lock. code() is the lock's held_error.
// (It sits here, not with the other errors, because it carries a Lease.)
class lock_held_error : public std::filesystem::filesystem_error {
 public:
  lock_held_error(const std::filesystem::path& lock_file, std::error_code code,
                  std::optional<Lease> holder, std::chrono::nanoseconds age, const std::string& note = {})
      : std::filesystem::filesystem_error(describe(holder, age) + note, lock_file, code),
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

#endif  // LOCKFILE_DETAIL_RECORD_HPP
