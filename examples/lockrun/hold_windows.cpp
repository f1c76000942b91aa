// --hold and --release on Windows: refused (exit 64). The POSIX holder
// (hold_posix.cpp) is a daemon of its own session that watches the calling
// shell through a pidfd and is stopped by SIGTERM; its Windows counterpart
// (a detached process holding a handle on the caller, stopped through a
// named event) is not built yet. Run the command under lockrun instead.
#include "lockrun.hpp"

namespace lockrun {

namespace {

int refuse(const char* option) {
  say(std::string(option) +
      " is not supported on Windows yet (no background holder for the calling shell); "
      "run the command under the lock instead: lockrun FILE COMMAND, or lockrun FILE -c STRING");
  return exit_usage;
}

}  // namespace

int hold(const config&, int, char**) { return refuse("--hold"); }
int hold_in_background(const config&) { return refuse("--hold"); }
int release(const config&) { return refuse("--release"); }

// No --hold holder records exist on Windows.
std::optional<std::pair<pid_t, unsigned long long>> hold_target_of(const lockfile::Lease&) { return std::nullopt; }

}  // namespace lockrun
