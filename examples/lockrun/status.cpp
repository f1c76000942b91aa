// lockrun's messages, the description of a lock's holder, and --status.
#include "lockrun.hpp"

#include <cstdio>
#include <string_view>

namespace lockrun {

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------
void say(const std::string& message) { std::fprintf(stderr, "lockrun: %s\n", message.c_str()); }

namespace {

long long to_millis(std::chrono::nanoseconds age) {
  return std::chrono::duration_cast<milliseconds>(age).count();
}

}  // namespace

std::string describe_holder(const std::string& lock_file, const std::optional<lockfile::Lease>& holder) {
  if (!holder) return lock_file + " is held (its content is not a lease record)";
  std::string text = lock_file + " is held by pid " + std::to_string(holder->pid);
  if (!holder->host.empty()) text += " on host " + holder->host;
  const auto age = std::chrono::system_clock::now() - holder->heartbeat;
  return text + ", last heartbeat " + std::to_string(to_millis(age)) + " ms ago";
}

// ---------------------------------------------------------------------------
// --status: one JSON object on stdout
// ---------------------------------------------------------------------------
namespace {

// The length of the well-formed UTF-8 sequence at text[i], or 0.
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) length = 2;
  else if (lead == 0xE0) length = 3, low = 0xA0;
  else if (lead == 0xED) length = 3, high = 0x9F;  // no surrogates
  else if (lead >= 0xE1 && lead <= 0xEF) length = 3;
  else if (lead == 0xF0) length = 4, low = 0x90;
  else if (lead >= 0xF1 && lead <= 0xF3) length = 4;
  else if (lead == 0xF4) length = 4, high = 0x8F;
  else return 0;
  if (i + length > text.size() || byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return length;
}

// A JSON string. A path may hold any bytes; JSON must be UTF-8, so a byte
// that is not part of a well-formed sequence becomes U+FFFD.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else if (c >= 0x80) {
      const std::size_t length = utf8_length(text, i);
      if (length == 0) {
        out += "\\ufffd";
        ++i;
        continue;
      }
      out.append(text.substr(i, length));
      i += length;
      continue;
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  return out + "\"";
}

std::string status_json(const std::string& lock_file, const lockfile::LockStatus& status) {
  const char* state = status.state == lockfile::LockState::held      ? "held"
                      : status.state == lockfile::LockState::stale   ? "stale"
                      : status.state == lockfile::LockState::foreign ? "foreign"
                                                                     : "free";
  const auto& lease = status.lease;
  const bool exists = status.state != lockfile::LockState::free;
  std::string out = "{\"state\":\"" + std::string(state) + "\"";
  out += ",\"path\":" + json_string(lock_file);
  out += ",\"validRecord\":" + std::string(lease ? "true" : "false");
  out += ",\"pid\":" + (lease ? std::to_string(lease->pid) : "null");
  out += ",\"host\":" + (lease && !lease->host.empty() ? json_string(lease->host) : "null");
  out += ",\"ownerID\":" + (lease ? json_string(lease->owner_id) : "null");
  // For a file that is not a valid record, the age of its last modification
  // (that is what the library judges it by).
  out += ",\"heartbeatAgeMs\":" + (exists ? std::to_string(to_millis(status.age)) : "null");
  return out + "}\n";
}

}  // namespace

int print_status(const config& cfg) {
  lockfile::LockStatus status;
  try {
    status = lockfile::inspect(cfg.lock_file, lock_options(cfg));
  } catch (const std::filesystem::filesystem_error& e) {
    say(std::string("cannot inspect the lock: ") + e.what());
    return exit_lock_error;
  }
  std::fputs(status_json(cfg.lock_file, status).c_str(), stdout);
  if (std::fflush(stdout) != 0) return exit_lock_error;
  switch (status.state) {
    case lockfile::LockState::held: return exit_status_held;
    case lockfile::LockState::stale: return exit_status_stale;
    case lockfile::LockState::foreign: return exit_status_foreign;
    case lockfile::LockState::free: break;
  }
  return exit_status_free;
}

}  // namespace lockrun
