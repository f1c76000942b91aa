// lockrun's command line: the options, the usage and help text, and the
// library's Options made from them.
#include "lockrun.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

namespace lockrun {

namespace {

// Whole-string numbers only: no sign, no spaces, no trailing bytes. from_chars
// is locale-independent (strtod would read "1,5" in some locales).
std::optional<double> parse_seconds(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<long long> parse_integer(std::string_view text) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

[[noreturn]] void bad_value(std::string_view option, std::string_view value, std::string_view expected) {
  throw usage_error{"invalid value '" + std::string(value) + "' for " + std::string(option) + ": expected " +
                    std::string(expected)};
}

struct option_spec {
  const char* long_name;
  char short_name;  // '\0' when there is none
  bool takes_value;
};

constexpr option_spec option_specs[] = {
    {"wait", 'w', false},           {"timeout", 't', true},  {"stale", '\0', true},
    {"heartbeat", '\0', true},      {"conflict-exit-code", 'E', true},
    {"on-lost", '\0', true},        {"kill-after", '\0', true}, {"quiet", 'q', false},
    {"status", '\0', false},        {"help", 'h', false},        {"version", '\0', false},
};

// Applies one option; `spelled` is how the user wrote it, for messages.
void apply_option(config& cfg, const option_spec& spec, std::string_view spelled, std::string_view value) {
  const std::string_view name = spec.long_name;
  if (name == "wait") {
    cfg.wait = true;
  } else if (name == "timeout") {
    const auto seconds = parse_seconds(value);
    if (!seconds || *seconds < 0) bad_value(spelled, value, "a number of seconds >= 0");
    cfg.timeout_seconds = *seconds;
    cfg.timeout_text = std::string(value);
    cfg.wait = true;
  } else if (name == "stale") {
    const auto seconds = parse_seconds(value);
    // 24 h is also the most a record's own threshold may impose on others.
    if (!seconds || *seconds <= 0 || *seconds > 86400)
      bad_value(spelled, value, "a number of seconds > 0 and <= 86400");
    cfg.stale = milliseconds(static_cast<long long>(std::ceil(*seconds * 1000)));
  } else if (name == "heartbeat") {
    const auto ms = parse_integer(value);
    if (!ms || *ms <= 0 || *ms > 86'400'000) bad_value(spelled, value, "whole milliseconds > 0");
    cfg.heartbeat = milliseconds(*ms);
  } else if (name == "conflict-exit-code") {
    const auto code = parse_integer(value);
    if (!code || *code < 0 || *code > 255) bad_value(spelled, value, "an exit status from 0 to 255");
    cfg.conflict_exit = static_cast<int>(*code);
  } else if (name == "on-lost") {
    if (value == "term") cfg.on_lost = lost_action::term;
    else if (value == "kill") cfg.on_lost = lost_action::kill;
    else if (value == "ignore") cfg.on_lost = lost_action::ignore;
    else bad_value(spelled, value, "term, kill or ignore");
  } else if (name == "kill-after") {
    const auto seconds = parse_seconds(value);
    if (!seconds || *seconds < 0 || *seconds > 86400)
      bad_value(spelled, value, "a number of seconds >= 0 and <= 86400");
    cfg.kill_after = milliseconds(static_cast<long long>(std::ceil(*seconds * 1000)));
    cfg.kill_after_text = std::string(value);
  } else if (name == "quiet") {
    cfg.quiet = true;
  } else if (name == "status") {
    cfg.status = true;
  } else if (name == "help") {
    cfg.help = true;
  } else if (name == "version") {
    cfg.version = true;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------
extern const char usage_text[];
const char usage_text[] =
    "Usage: lockrun [OPTIONS] LOCKFILE -- COMMAND [ARG...]\n"
    "       lockrun --status [--stale SECONDS] LOCKFILE\n";

// What becomes of COMMAND when lockrun dies without stopping it (SIGKILL, a
// crash): see spawn_command.
#if defined(__linux__)
#define LOCKRUN_DEATH_TEXT                                                           \
  "If lockrun dies without stopping COMMAND (SIGKILL, a crash), COMMAND gets\n"      \
  "SIGKILL too, so it never runs on without the lock. Processes that COMMAND\n"     \
  "started itself are not signalled.\n"
#else
#define LOCKRUN_DEATH_TEXT                                                           \
  "If lockrun dies without stopping COMMAND (SIGKILL, a crash), COMMAND is not\n"   \
  "stopped on this system: it may run on without the lock, whose lease is no\n"    \
  "longer renewed, goes stale after --stale seconds, and may then be taken over\n" \
  "by another process.\n"
#endif

extern const char help_text[];
const char help_text[] =
    "\n"
    "Run COMMAND while holding the lease lock LOCKFILE (created if missing, removed\n"
    "afterwards). Signals INT, TERM, HUP and QUIT sent to lockrun are passed on.\n"
    LOCKRUN_DEATH_TEXT
    "A file at LOCKFILE that is not a lock file is never touched (exit 74).\n"
    "\n"
    "Options:\n"
    "  -w, --wait                  wait until the lock is free (default: give up at once)\n"
    "  -t, --timeout SECONDS       wait at most SECONDS (fractions allowed); implies --wait\n"
    "      --stale SECONDS         lease stale threshold (default 3)\n"
    "      --heartbeat MS          lease renewal interval in ms (default 250, at most\n"
    "                              a quarter of --stale when only --stale is given)\n"
    "  -E, --conflict-exit-code N  exit status when the lock is held (default 75)\n"
    "      --on-lost ACTION        when the lease is lost: term (default) sends COMMAND\n"
    "                              SIGTERM, kill sends SIGKILL, ignore lets it run on\n"
    "      --kill-after SECONDS    with --on-lost term: send SIGKILL when COMMAND has\n"
    "                              not exited SECONDS after the SIGTERM (default 5,\n"
    "                              fractions allowed)\n"
    "  -q, --quiet                 do not report who holds the lock\n"
    "      --status                print the lock's state as one JSON object\n"
    "  -h, --help                  show this help and exit\n"
    "      --version               show the version and exit\n"
    "\n"
    "Exit status:\n"
    "  COMMAND's own status, or 128+N when it died of signal N\n"
    "  75   the lock is held (or --timeout passed); see -E\n"
    "  76   the lease was lost and COMMAND was stopped (its own non-zero exit\n"
    "       status wins)\n"
    "  64   bad usage\n"
    "  74   the lock file cannot be created or read, or LOCKFILE is a file that is\n"
    "       not a lock file (left as it is)\n"
    "  126  COMMAND cannot be executed          127  COMMAND not found\n"
    "  128+N  lockrun got signal N before COMMAND started\n"
    "  --status: 0 held, 1 free, 2 stale, 3 not a lock file (\"state\":\"foreign\")\n";
#undef LOCKRUN_DEATH_TEXT

// Parses argv. Options may come before or after LOCKFILE, but not after "--".
// --help and --version end parsing where they stand.
config parse_command_line(int argc, char** argv) {
  config cfg;
  bool have_separator = false;
  int i = 1;
  // The value of an option: the rest of the argument, or the next argument.
  auto take_value = [&](std::string_view spelled, std::string_view attached, bool has_attached) {
    if (has_attached) return attached;
    if (i + 1 >= argc) throw usage_error{"option " + std::string(spelled) + " needs a value"};
    return std::string_view(argv[++i]);
  };
  for (; i < argc && !cfg.help && !cfg.version; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      have_separator = true;
      ++i;
      break;
    }
    if (arg.starts_with("--")) {
      const auto eq = arg.find('=');
      const std::string_view name = arg.substr(2, eq == std::string_view::npos ? eq : eq - 2);
      const option_spec* spec = nullptr;
      for (const auto& candidate : option_specs)
        if (name == candidate.long_name) spec = &candidate;
      const std::string spelled = "--" + std::string(name);
      if (spec == nullptr) throw usage_error{"unknown option '" + spelled + "'"};
      if (!spec->takes_value && eq != std::string_view::npos)
        throw usage_error{"option " + spelled + " takes no value"};
      const std::string_view value =
          spec->takes_value ? take_value(spelled, arg.substr(eq == std::string_view::npos ? arg.size() : eq + 1),
                                         eq != std::string_view::npos)
                            : std::string_view{};
      apply_option(cfg, *spec, spelled, value);
    } else if (arg.size() > 1 && arg[0] == '-') {
      // A cluster of short options: "-wq", "-t5", "-qt 5".
      for (std::size_t k = 1; k < arg.size(); ++k) {
        const option_spec* spec = nullptr;
        for (const auto& candidate : option_specs)
          if (candidate.short_name == arg[k]) spec = &candidate;
        const std::string spelled = std::string("-") + arg[k];
        if (spec == nullptr) throw usage_error{"unknown option '" + spelled + "'"};
        if (spec->takes_value) {
          apply_option(cfg, *spec, spelled, take_value(spelled, arg.substr(k + 1), k + 1 < arg.size()));
          break;
        }
        apply_option(cfg, *spec, spelled, {});
        if (cfg.help || cfg.version) break;
      }
    } else if (cfg.lock_file.empty()) {
      cfg.lock_file = std::string(arg);
    } else {
      throw usage_error{"unexpected argument '" + std::string(arg) + "' (COMMAND must follow '--')"};
    }
  }
  if (cfg.help || cfg.version) return cfg;

  for (; i < argc; ++i) cfg.command.push_back(argv[i]);
  cfg.command.push_back(nullptr);

  if (cfg.lock_file.empty()) throw usage_error{"missing LOCKFILE"};
  if (cfg.status) {
    if (have_separator) throw usage_error{"--status takes no COMMAND"};
  } else if (!have_separator) {
    throw usage_error{"missing '--' and COMMAND after LOCKFILE"};
  } else if (cfg.command.size() == 1) {
    throw usage_error{"missing COMMAND after '--'"};
  }
  return cfg;
}

// The library's options from ours. Defaults are the library's (250 ms, 3 s);
// when only one of the two is given, the other is derived so that several
// heartbeats fit in one stale threshold.
lockfile::Options lock_options(const config& cfg) {
  lockfile::Options options;
  if (cfg.stale) options.lease_stale_threshold = *cfg.stale;
  if (cfg.heartbeat) options.lease_heartbeat_interval = *cfg.heartbeat;
  if (cfg.stale && !cfg.heartbeat)
    options.lease_heartbeat_interval = std::max(milliseconds(1), std::min(milliseconds(250), *cfg.stale / 4));
  if (cfg.heartbeat && !cfg.stale)
    options.lease_stale_threshold = std::max(milliseconds(3000), *cfg.heartbeat * 4);
  if (options.lease_heartbeat_interval >= options.lease_stale_threshold)
    throw usage_error{"--heartbeat (" + std::to_string(options.lease_heartbeat_interval.count()) +
                      " ms) must be shorter than --stale (" +
                      std::to_string(options.lease_stale_threshold.count()) +
                      " ms), or the lease would expire between heartbeats"};
  return options;
}

}  // namespace lockrun
