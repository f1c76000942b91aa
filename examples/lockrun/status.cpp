// lockrun's messages, the description of a lock's holder, --status and
// --holder.
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

// What the holder is, when it runs on this machine in our PID space: its
// command line (shortened), or for a --hold background holder, whom it
// holds the lock for. Empty when unknown.
std::string what_holder_runs(const lockfile::Lease& holder) {
  if (!lease_is_local(holder) || !is_running(holder.pid, holder.start_time)) return {};
  const auto shorten = [](std::string text) {
    // One line: a script's newlines and tabs become spaces.
    for (char& c : text)
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    constexpr std::size_t most = 60;
    if (text.size() > most) text = text.substr(0, most - 3) + "...";
    return text;
  };
  const auto joined = [](const std::vector<std::string>& args) {
    std::string text;
    for (const auto& arg : args) text += (text.empty() ? "" : " ") + arg;
    return text;
  };
  if (const auto target = hold_target_of(holder)) {
    std::string text = "lockrun --hold for pid " + std::to_string(target->first);
    const auto caller = command_line_of(target->first);
    if (!caller.empty()) text += ", " + shorten(joined(caller));
    return text;
  }
  return shorten(joined(command_line_of(holder.pid)));
}

std::string holder_text(const lockfile::Lease& holder) {
  std::string text = "pid " + std::to_string(holder.pid);
  if (const auto runs = what_holder_runs(holder); !runs.empty()) text += " (" + runs + ")";
  if (!holder.host.empty()) text += " on host " + holder.host;
  const auto age = std::chrono::system_clock::now() - holder.heartbeat;
  return text + ", last heartbeat " + std::to_string(to_millis(age)) + " ms ago";
}

}  // namespace

std::string describe_holder(const std::string& lock_file, const std::optional<lockfile::Lease>& holder) {
  if (!holder) return lock_file + " is held (its content is not a lease record)";
  return lock_file + " is held by " + holder_text(*holder);
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

namespace {

int exit_status_of(lockfile::LockState state) {
  switch (state) {
    case lockfile::LockState::held: return exit_status_held;
    case lockfile::LockState::stale: return exit_status_stale;
    case lockfile::LockState::foreign: return exit_status_foreign;
    case lockfile::LockState::free: break;
  }
  return exit_status_free;
}

// The lock's state, or an exit status after saying why it cannot be known.
std::optional<lockfile::LockStatus> inspect_or_say(const config& cfg, int& exit_status) {
  try {
    return lockfile::inspect(path_of(cfg.lock_file), lock_options(cfg));
  } catch (const std::filesystem::filesystem_error& e) {
    say(std::string("cannot inspect the lock: ") + e.what());
    exit_status = exit_status_for(e.code());
  } catch (const std::exception& e) {
    say(std::string("cannot inspect the lock: ") + e.what());
    exit_status = exit_os_error;
  }
  return std::nullopt;
}

}  // namespace

int print_status(const config& cfg) {
  int error_status = 0;
  const auto status = inspect_or_say(cfg, error_status);
  if (!status) return error_status;
  std::fputs(status_json(cfg.lock_file, *status).c_str(), stdout);
  if (std::fflush(stdout) != 0) return exit_lock_error;
  return exit_status_of(status->state);
}

int print_holder(const config& cfg) {
  int error_status = 0;
  const auto status = inspect_or_say(cfg, error_status);
  if (!status) return error_status;
  std::string line;
  switch (status->state) {
    case lockfile::LockState::free: line = cfg.lock_file + " is free"; break;
    case lockfile::LockState::held: line = describe_holder(cfg.lock_file, status->lease); break;
    case lockfile::LockState::stale:
      line = cfg.lock_file + " is stale: " +
             (status->lease ? "last held by " + holder_text(*status->lease)
                            : "its content is not a lease record, last changed " +
                                  std::to_string(to_millis(status->age)) + " ms ago");
      break;
    case lockfile::LockState::foreign:
      line = cfg.lock_file + " is not a lock file; lockrun leaves it alone";
      break;
  }
  std::fputs((line + "\n").c_str(), stdout);
  if (std::fflush(stdout) != 0) return exit_lock_error;
  return exit_status_of(status->state);
}

}  // namespace lockrun
