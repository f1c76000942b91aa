// The system's names and codes, on POSIX: arguments and paths are bytes as
// given, -c runs $SHELL -c (as flock(1)), and errors are errno values.
#include "lockrun.hpp"

#include <cerrno>
#include <cstdlib>

namespace lockrun {

std::vector<char*> utf8_arguments(int argc, char** argv) { return {argv, argv + argc}; }

std::filesystem::path path_of(const std::string& text) { return text; }
std::string text_of(const std::filesystem::path& path) { return path.string(); }

// The shell for -c, as flock(1): $SHELL, or /bin/sh when it is unset or empty.
std::vector<char*> shell_command(char* string) {
  static char bin_sh[] = "/bin/sh";
  static char dash_c[] = "-c";
  char* shell = std::getenv("SHELL");
  return {shell != nullptr && *shell != '\0' ? shell : bin_sh, dash_c, string, nullptr};
}

std::error_code set_environment(const char* name, const std::string& value) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): lockrun's other threads (the library's) never read the environment
  if (::setenv(name, value.c_str(), 1) != 0) return {errno, std::generic_category()};
  return {};
}

void clear_environment(const char* name) {
  ::unsetenv(name);  // NOLINT(concurrency-mt-unsafe): as in set_environment
}

int exit_status_for(const std::error_code& ec) {
  if (ec == lockfile::errc::not_a_lock_file) return exit_lock_error;
  if (ec.category() != std::generic_category() && ec.category() != std::system_category()) return exit_lock_error;
  switch (ec.value()) {
    case ENOMEM: case EMFILE: case ENFILE: case ENOLCK: case EAGAIN: return exit_os_error;
    case EROFS: case ENOSPC: case EDQUOT: return exit_cannot_create;
    case EIO: case ESTALE: case ETIMEDOUT: return exit_lock_error;
    default: return exit_cannot_open;
  }
}

}  // namespace lockrun
