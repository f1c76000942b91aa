// lockrun's command line: the options (flock(1)'s, then lockrun's own), the
// usage and help text, and the library's Options made from them.
//
// The grammar is flock(1)'s: OPTIONS FILE COMMAND [ARG...] or OPTIONS FILE
// -c STRING. Options end at the first argument after FILE that is not an
// option (COMMAND), or at "--"; so `lockrun F cmd -n` passes -n to cmd, and
// the old `lockrun [OPTIONS] FILE -- COMMAND` works as before. Options
// between FILE and COMMAND are accepted as lockrun always has (flock would
// try to run them as the command). Long options may be abbreviated to any
// unique prefix, as getopt_long() allows for flock.
#include "lockrun.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
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

enum class opt {
  nonblock, wait, conflict_exit_code, exclusive, shared, unlock, close, no_fork, command, verbose, help,
  version, stale, heartbeat, on_lost, kill_after, quiet, status, holder, hold, release, hold_for, fencing,
};

struct option_spec {
  const char* long_name;  // nullptr for a short-only spelling
  char short_name;        // '\0' when there is none
  bool takes_value;
  opt id;
  bool abbreviable = true;  // may be given as a unique prefix
};

// Several spellings may share an id (flock: -w, --wait and --timeout).
constexpr option_spec option_specs[] = {
    // flock(1)'s options
    {"nonblock", 'n', false, opt::nonblock},
    {"nonblocking", '\0', false, opt::nonblock},  // flock's own long name; its man page says --nonblock
    {"nb", '\0', false, opt::nonblock},
    {"wait", 'w', true, opt::wait},
    {"timeout", '\0', true, opt::wait},
    {nullptr, 't', true, opt::wait},  // lockrun's old spelling of -w
    {"conflict-exit-code", 'E', true, opt::conflict_exit_code},
    {"exclusive", 'x', false, opt::exclusive},
    {nullptr, 'e', false, opt::exclusive},
    {"shared", 's', false, opt::shared},
    {"unlock", 'u', false, opt::unlock},
    {"close", 'o', false, opt::close},
    {"no-fork", 'F', false, opt::no_fork},
    {"command", 'c', true, opt::command},
    {"verbose", '\0', false, opt::verbose},
    {"help", 'h', false, opt::help},
    {"version", 'V', false, opt::version},
    // lockrun's own (long only, but for lockrun's old -q)
    {"stale", '\0', true, opt::stale},
    {"heartbeat", '\0', true, opt::heartbeat},
    {"on-lost", '\0', true, opt::on_lost},
    {"kill-after", '\0', true, opt::kill_after},
    {"fencing", '\0', false, opt::fencing},
    {"quiet", 'q', false, opt::quiet},
    {"status", '\0', false, opt::status},
    {"holder", '\0', false, opt::holder},
    {"hold", '\0', false, opt::hold},
    {"release", '\0', false, opt::release},
    // Internal: how --hold starts its background holder (hold_posix.cpp).
    {"hold-for", '\0', true, opt::hold_for, false},
};

const char* mode_option(mode m) {
  switch (m) {
    case mode::status: return "--status";
    case mode::holder: return "--holder";
    case mode::hold: return "--hold";
    case mode::release: return "--release";
    case mode::run: break;
  }
  return "COMMAND";
}

// The spec for a long option spelled `name` (without "--"): an exact match,
// else the one option (by meaning) that `name` is a prefix of.
const option_spec& find_long(std::string_view name) {
  for (const auto& spec : option_specs)
    if (spec.long_name != nullptr && name == spec.long_name) return spec;
  const option_spec* found = nullptr;
  bool ambiguous = false;
  std::string candidates;
  for (const auto& spec : option_specs) {
    if (spec.long_name == nullptr || !spec.abbreviable || name.empty() ||
        !std::string_view(spec.long_name).starts_with(name))
      continue;
    candidates += std::string(candidates.empty() ? "" : ", ") + "--" + spec.long_name;
    if (found == nullptr) found = &spec;
    else if (found->id != spec.id) ambiguous = true;
  }
  if (ambiguous) throw usage_error{"option '--" + std::string(name) + "' is ambiguous (" + candidates + ")"};
  if (found == nullptr) throw usage_error{"unknown option '--" + std::string(name) + "'"};
  return *found;
}

const option_spec& find_short(char c) {
  for (const auto& spec : option_specs)
    if (spec.short_name == c) return spec;
  throw usage_error{"unknown option '-" + std::string(1, c) + "'"};
}

void set_mode(config& cfg, mode m) {
  if (cfg.what != mode::run && cfg.what != m)
    throw usage_error{std::string(mode_option(cfg.what)) + " and " + mode_option(m) + " cannot be used together"};
  cfg.what = m;
}

// Applies one option; `spelled` is how the user wrote it, for messages.
void apply_option(config& cfg, const option_spec& spec, std::string_view spelled, char* value) {
  const std::string_view text = value != nullptr ? value : "";
  switch (spec.id) {
    case opt::nonblock: cfg.nonblock = true; break;
    case opt::wait: {
      const auto seconds = parse_seconds(text);
      if (!seconds || *seconds < 0) bad_value(spelled, text, "a number of seconds >= 0");
      cfg.timeout_seconds = *seconds;
      cfg.timeout_text = std::string(text);
      break;
    }
    case opt::conflict_exit_code: {
      const auto code = parse_integer(text);
      if (!code || *code < 0 || *code > 255) bad_value(spelled, text, "an exit status from 0 to 255");
      cfg.conflict_exit = static_cast<int>(*code);
      break;
    }
    case opt::exclusive: break;  // the only kind of lock a lease is
    case opt::close: break;      // COMMAND never inherits the lock's descriptor (child_*.cpp)
    case opt::shared:
      throw usage_error{std::string(spelled) +
                        ": shared locks are not supported by lease locks (a lease has exactly one holder)"};
    case opt::unlock:
      throw usage_error{std::string(spelled) +
                        ": not supported by lease locks (no descriptor holds the lock); "
                        "'lockrun --release FILE' ends a 'lockrun --hold FILE'"};
    case opt::no_fork:
      throw usage_error{std::string(spelled) +
                        ": not supported by lease locks: lockrun must stay to renew the lease while "
                        "COMMAND runs, so it cannot exec COMMAND in its place"};
    case opt::command: {
      // As flock: "-c STRING" right after FILE, and nothing after it.
      if (cfg.lock_file.empty())
        throw usage_error{std::string(spelled) + " must follow FILE: lockrun [OPTIONS] FILE -c 'COMMAND'"};
      cfg.command = shell_command(value);
      cfg.command_string = value;
      break;
    }
    case opt::verbose: cfg.verbose = true; break;
    case opt::quiet: cfg.verbose = false; break;
    case opt::help: cfg.help = true; break;
    case opt::version: cfg.version = true; break;
    case opt::stale: {
      const auto seconds = parse_seconds(text);
      // 24 h is also the most a record's own threshold may impose on others.
      if (!seconds || *seconds <= 0 || *seconds > 86400)
        bad_value(spelled, text, "a number of seconds > 0 and <= 86400");
      cfg.stale = milliseconds(static_cast<long long>(std::ceil(*seconds * 1000)));
      break;
    }
    case opt::heartbeat: {
      const auto ms = parse_integer(text);
      if (!ms || *ms <= 0 || *ms > 86'400'000) bad_value(spelled, text, "whole milliseconds > 0");
      cfg.heartbeat = milliseconds(*ms);
      break;
    }
    case opt::on_lost:
      if (text == "term") cfg.on_lost = lost_action::term;
      else if (text == "kill") cfg.on_lost = lost_action::kill;
      else if (text == "ignore") cfg.on_lost = lost_action::ignore;
      else bad_value(spelled, text, "term, kill or ignore");
      cfg.on_lost_given = true;
      break;
    case opt::kill_after: {
      const auto seconds = parse_seconds(text);
      if (!seconds || *seconds < 0 || *seconds > 86400)
        bad_value(spelled, text, "a number of seconds >= 0 and <= 86400");
      cfg.kill_after = milliseconds(static_cast<long long>(std::ceil(*seconds * 1000)));
      cfg.kill_after_text = std::string(text);
      cfg.on_lost_given = true;
      break;
    }
    case opt::fencing: cfg.fencing = true; break;
    case opt::status: set_mode(cfg, mode::status); break;
    case opt::holder: set_mode(cfg, mode::holder); break;
    case opt::hold: set_mode(cfg, mode::hold); break;
    case opt::release: set_mode(cfg, mode::release); break;
    case opt::hold_for: {
      const auto colon = text.find(':');
      const auto pid = parse_integer(text.substr(0, colon));
      const auto start = colon == std::string_view::npos ? std::nullopt : parse_integer(text.substr(colon + 1));
      if (!pid || *pid <= 0 || *pid > INT32_MAX || !start || *start < 0) bad_value(spelled, text, "PID:START");
      cfg.hold_for = std::pair{static_cast<pid_t>(*pid), static_cast<unsigned long long>(*start)};
      break;
    }
  }
}

bool is_option(std::string_view arg) { return arg.size() > 1 && arg[0] == '-' && arg != "--"; }

}  // namespace

// ---------------------------------------------------------------------------
// Usage and help
// ---------------------------------------------------------------------------
const char usage_text[] =
    "Usage: lockrun [OPTIONS] FILE COMMAND [ARG...]\n"
    "       lockrun [OPTIONS] FILE -c 'COMMAND STRING'\n"
    "       lockrun [OPTIONS] --hold FILE      (and later: lockrun --release FILE)\n"
    "       lockrun --status|--holder [--stale SECONDS] FILE\n";

// What differs by OS in the help: how COMMAND and -c run, what passes on to
// it, and what becomes of COMMAND when lockrun dies without stopping it
// (SIGKILL, a crash): see child_posix.cpp and child_windows.cpp.
#if defined(_WIN32)
#define LOCKRUN_INTRO_TEXT                                                             \
  "waits for the lock (creating FILE and missing directories), runs COMMAND,\n"       \
  "removes FILE when it exits and exits with its exit code. COMMAND shares the\n"    \
  "console: Ctrl-C and Ctrl-Break reach it directly, and lockrun ignores them\n"     \
  "while it runs. -c runs the string with cmd.exe /d /s /c (the string as it is).\n" \
  "Options end at COMMAND or '--'. A directory as FILE is locked through the file\n"  \
  "DIR/.lockrun.lock in it. A file at FILE that is not a lock file is never\n"       \
  "touched (exit 74). Nothing is printed when the lock is held, unless --verbose.\n"
#define LOCKRUN_SHELL_OPTION_TEXT \
  "  -c, --command STRING        run STRING through cmd.exe /d /s /c (right after FILE)\n"
#define LOCKRUN_DEATH_TEXT                                                             \
  "COMMAND runs in a job object that ends with lockrun: if lockrun dies (killed,\n"  \
  "a crash), COMMAND and every process it started are ended too, so none runs on\n" \
  "without the lock. --on-lost term and kill both end them at once (exit 76).\n"    \
  "--hold and --release are not supported on Windows (exit 64).\n"
#else
#define LOCKRUN_INTRO_TEXT                                                             \
  "waits for the lock (creating FILE and missing directories), runs COMMAND,\n"       \
  "passes signals INT, TERM, HUP and QUIT on to it, removes FILE when it exits\n"    \
  "and exits with its status. -c runs the string with $SHELL -c (/bin/sh when\n"     \
  "SHELL is unset), as flock(1). Options end at COMMAND or '--'. A directory as\n"   \
  "FILE is locked through the file DIR/.lockrun.lock in it. A file at FILE that\n"   \
  "is not a lock file is never touched (exit 74). Nothing is printed when the\n"    \
  "lock is held, unless --verbose.\n"
#define LOCKRUN_SHELL_OPTION_TEXT \
  "  -c, --command STRING        run STRING through $SHELL -c (right after FILE)\n"
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
#endif

const char help_text[] =
    "\n"
    "Run COMMAND while holding the lease lock FILE; a drop-in for flock(1). lockrun\n"
    LOCKRUN_INTRO_TEXT
    LOCKRUN_DEATH_TEXT
    "\n"
    "flock(1)'s options (long ones may be abbreviated):\n"
    "  -n, --nonblock, --nb        fail at once when the lock is held (see -E)\n"
    "  -w, --wait, --timeout SECS  wait at most SECS (fractions allowed; 0 is -n);\n"
    "                              without -n or -w, lockrun waits until it is free\n"
    "  -E, --conflict-exit-code N  exit status when the lock is held or -w passed\n"
    "                              (default 1)\n"
    "  -x, -e, --exclusive         accepted: a lease is always exclusive\n"
    "  -o, --close                 accepted: COMMAND never inherits a descriptor of\n"
    "                              the lock, so there is none to close\n"
    LOCKRUN_SHELL_OPTION_TEXT
    "      --verbose               report on stderr who holds the lock, the wait,\n"
    "                              and how long getting the lock took\n"
    "  -h, --help                  show this help and exit\n"
    "  -V, --version               show the version and exit\n"
    "  not supported by lease locks (exit 64): -s/--shared (a lease has one holder),\n"
    "  -u/--unlock and a descriptor number as FILE (no descriptor holds a lease:\n"
    "  use --hold and --release), -F/--no-fork (lockrun must stay to renew the lease)\n"
    "\n"
    "lockrun's own options:\n"
    "      --stale SECONDS         lease stale threshold (default 3)\n"
    "      --heartbeat MS          lease renewal interval in ms (default 250, at most\n"
    "                              a quarter of --stale when only --stale is given)\n"
    "      --on-lost ACTION        when the lease is lost: term (default) sends\n"
    "                              COMMAND SIGTERM, kill sends SIGKILL, ignore lets\n"
    "                              it run on\n"
    "      --kill-after SECONDS    with --on-lost term: send SIGKILL when COMMAND has\n"
    "                              not exited SECONDS after the SIGTERM (default 5,\n"
    "                              fractions allowed)\n"
    "      --fencing               give COMMAND a fencing token, greater than any\n"
    "                              given for FILE before, in LOCKFILE_FENCING_TOKEN\n"
    "                              (pass it with each write to what the lock guards)\n"
    "      --status                print the lock's state as one JSON object\n"
    "      --holder                print who holds the lock, one line\n"
    "      --hold                  no COMMAND: take the lock for the calling shell\n"
    "                              (lockrun's parent) and keep it from a background\n"
    "                              process until that shell exits or runs --release;\n"
    "                              returns once the lock is held. lockrun's answer to\n"
    "                              'exec 9>FILE; flock -n 9'\n"
    "      --release               end this shell's --hold; returns once released\n"
    "  -q, --quiet                 report nothing when the lock is held (the default;\n"
    "                              cancels --verbose)\n"
    "  -t SECONDS                  lockrun's old spelling of -w\n"
    "\n"
    "Exit status:\n"
    "  COMMAND's own status, or 128+N when it died of signal N\n"
    "  1    the lock is held (-n) or -w passed; see -E (as flock)\n"
    "  64   bad usage (as flock), or a flock(1) form leases do not support\n"
    "  66   the lock file cannot be opened or created: permission, a symbolic link,\n"
    "       not a regular file, ... (as flock)\n"
    "  71   a system call lockrun needs failed (as flock)\n"
    "  73   read-only file system, no space (as flock)\n"
    "  74   FILE is not a lock file (left as it is; flock locks any file), or an\n"
    "       I/O error\n"
    "  76   the lease was lost and COMMAND was stopped (its own non-zero status\n"
    "       wins; flock has no lease to lose)\n"
    "  126  COMMAND cannot be executed   127  COMMAND not found   (flock exits 69 for\n"
    "       both; lockrun tells them apart, as the shell, env and timeout do)\n"
    "  128+N  lockrun got signal N before COMMAND started\n"
    "  --status, --holder: 0 free, 1 held, 2 stale, 3 not a lock file (\"foreign\")\n"
    "  --hold: 0 once held, else as above. --release: 0 released, 1 not held by a\n"
    "  --hold of this shell\n";
#undef LOCKRUN_INTRO_TEXT
#undef LOCKRUN_SHELL_OPTION_TEXT
#undef LOCKRUN_DEATH_TEXT

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

// --help and --version end parsing where they stand.
config parse_command_line(int argc, char** argv) {
  config cfg;
  bool options_ended = false;  // "--" seen before FILE: no options after it
  bool command_given = false;
  int i = 1;
  // The value of an option: the rest of the argument, or the next argument.
  auto take_value = [&](std::string_view spelled, char* attached) -> char* {
    if (attached != nullptr) return attached;
    if (i + 1 >= argc) throw usage_error{"option " + std::string(spelled) + " needs a value"};
    return argv[++i];
  };
  auto apply = [&](const option_spec& spec, const std::string& spelled, char* value) {
    apply_option(cfg, spec, spelled, value);
    if (spec.id == opt::command) {
      if (i + 1 != argc) throw usage_error{spelled + " requires exactly one command argument"};
      command_given = true;
    }
  };
  for (; i < argc && !cfg.help && !cfg.version && !command_given; ++i) {
    char* const raw = argv[i];
    const std::string_view arg = raw;
    if (arg == "--" && !options_ended) {
      if (!cfg.lock_file.empty()) {  // FILE -- COMMAND
        ++i;
        break;
      }
      options_ended = true;  // -- FILE COMMAND, as flock
      continue;
    }
    if (options_ended || !is_option(arg)) {
      if (!cfg.lock_file.empty()) break;  // COMMAND starts here
      cfg.lock_file = std::string(arg);
      if (options_ended && i + 1 < argc && std::string_view(argv[i + 1]) == "--") ++i;  // -- FILE -- COMMAND
      if (options_ended && i + 1 < argc &&
          (std::string_view(argv[i + 1]) == "-c" || std::string_view(argv[i + 1]) == "--command")) {
        ++i;
        apply(find_short('c'), argv[i], take_value(argv[i], nullptr));
      }
      continue;
    }
    if (arg.starts_with("--")) {
      const auto eq = arg.find('=');
      const std::string_view name = arg.substr(2, eq == std::string_view::npos ? eq : eq - 2);
      const option_spec& spec = find_long(name);
      const std::string spelled = std::string("--") + spec.long_name;
      if (!spec.takes_value && eq != std::string_view::npos)
        throw usage_error{"option " + spelled + " takes no value"};
      char* value = nullptr;
      if (spec.takes_value) value = take_value(spelled, eq == std::string_view::npos ? nullptr : raw + eq + 1);
      apply(spec, spelled, value);
    } else {
      // A cluster of short options: "-nq", "-w5", "-nw 5".
      for (std::size_t k = 1; k < arg.size(); ++k) {
        const option_spec& spec = find_short(arg[k]);
        const std::string spelled = std::string("-") + arg[k];
        if (spec.takes_value) {
          apply(spec, spelled, take_value(spelled, k + 1 < arg.size() ? raw + k + 1 : nullptr));
          break;
        }
        apply(spec, spelled, nullptr);
        if (cfg.help || cfg.version) break;
      }
    }
  }
  if (cfg.help || cfg.version) return cfg;

  if (!command_given) {
    for (; i < argc; ++i) cfg.command.push_back(argv[i]);
    if (!cfg.command.empty()) cfg.command.push_back(nullptr);
  }

  if (cfg.lock_file.empty()) throw usage_error{"missing FILE"};
  if (cfg.hold_for && cfg.what != mode::hold) throw usage_error{"--hold-for is lockrun's own, for --hold"};
  if (cfg.what != mode::run) {
    if (!cfg.command.empty()) throw usage_error{std::string(mode_option(cfg.what)) + " takes no COMMAND"};
    if (cfg.what == mode::hold && cfg.on_lost_given)
      throw usage_error{"--on-lost and --kill-after act on a COMMAND; --hold has none"};
    // The token goes into COMMAND's environment: a shell's --hold has no
    // environment lockrun could change.
    if (cfg.fencing) throw usage_error{"--fencing gives COMMAND its token; " + std::string(mode_option(cfg.what)) + " has no COMMAND"};
  } else if (cfg.command.empty()) {
    if (cfg.lock_file.find_first_not_of("0123456789") == std::string::npos)
      throw usage_error{"'" + cfg.lock_file +
                        "' as a file descriptor (flock's 'flock 9' form) is not supported by lease locks: "
                        "no descriptor holds a lease; use 'lockrun --hold FILE' (and --release)"};
    throw usage_error{"missing COMMAND after FILE"};
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
  options.fencing = cfg.fencing;
  return options;
}

void resolve_lock_file(config& cfg) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path_of(cfg.lock_file), ec)) return;  // follows links, as stat()
  // flock(1) locks a directory itself; a lease is a file, so it goes inside,
  // under a name that says whose it is.
  const std::string inside = text_of(path_of(cfg.lock_file) / directory_lock_name);
  if (cfg.verbose && !cfg.hold_for) say(cfg.lock_file + " is a directory: locking " + inside);
  cfg.lock_file = inside;
}

}  // namespace lockrun
