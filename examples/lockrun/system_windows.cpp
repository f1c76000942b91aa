// The system's names and codes, on Windows: arguments from the wide command
// line as UTF-8, paths as UTF-16 (never the ANSI code page), -c through
// cmd.exe, and errors as GetLastError() codes.
#include "lockrun.hpp"

#include <shellapi.h>

#include <cerrno>

namespace lockrun {

std::string utf8_of(std::wstring_view text) {
  if (text.empty()) return {};
  const int size =
      ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0, nullptr, nullptr);
  std::string out(static_cast<std::size_t>(size > 0 ? size : 0), '\0');
  if (size > 0)
    ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), size, nullptr, nullptr);
  return out;
}

std::wstring wide_of(std::string_view text) {
  if (text.empty()) return {};
  const int size = ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0);
  std::wstring out(static_cast<std::size_t>(size > 0 ? size : 0), L'\0');
  if (size > 0) ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), size);
  return out;
}

// main()'s argv is in the ANSI code page, which cannot hold every file name:
// the wide command line, split by the rules the C runtime uses.
std::vector<char*> utf8_arguments(int argc, char** argv) {
  int count = 0;
  LPWSTR* wide = ::CommandLineToArgvW(::GetCommandLineW(), &count);
  if (wide == nullptr) return {argv, argv + argc};
  static std::vector<std::string> storage;  // lives as long as the process
  storage.clear();
  for (int k = 0; k < count; ++k) storage.push_back(utf8_of(wide[k]));
  ::LocalFree(static_cast<HLOCAL>(wide));
  std::vector<char*> out;
  for (auto& argument : storage) out.push_back(argument.data());
  return out;
}

std::filesystem::path path_of(const std::string& text) { return std::filesystem::path(wide_of(text)); }
std::string text_of(const std::filesystem::path& path) { return utf8_of(path.native()); }

// cmd.exe from the system directory (never one found in the current
// directory or on PATH): /d skips AutoRun commands, /s /c runs the rest of
// the line as it is (child_windows.cpp passes STRING in quotes, unescaped:
// cmd.exe does not read the C runtime's backslash escapes).
std::vector<char*> shell_command(char* string) {
  static std::string cmd = [] {
    wchar_t dir[MAX_PATH] = {};
    const UINT size = ::GetSystemDirectoryW(dir, MAX_PATH);
    return size > 0 && size < MAX_PATH ? utf8_of(std::wstring_view(dir, size)) + "\\cmd.exe" : std::string("cmd.exe");
  }();
  static char d[] = "/d";
  static char s[] = "/s";
  static char c[] = "/c";
  return {cmd.data(), d, s, c, string, nullptr};
}

std::error_code set_environment(const char* name, const std::string& value) {
  // CreateProcessW without an environment block passes on this process's.
  if (::SetEnvironmentVariableW(wide_of(name).c_str(), wide_of(value).c_str()) == FALSE)
    return {static_cast<int>(::GetLastError()), std::system_category()};
  return {};
}

void clear_environment(const char* name) { ::SetEnvironmentVariableW(wide_of(name).c_str(), nullptr); }

int exit_status_for(const std::error_code& ec) {
  if (ec == lockfile::errc::not_a_lock_file) return exit_lock_error;
  if (ec.category() == std::generic_category()) {  // the library's own (ELOOP, EISDIR, EINVAL)
    switch (ec.value()) {
      case ENOMEM: case EMFILE: case ENFILE: case EAGAIN: return exit_os_error;
      case EROFS: case ENOSPC: return exit_cannot_create;
      case EIO: return exit_lock_error;
      default: return exit_cannot_open;
    }
  }
  if (ec.category() != std::system_category()) return exit_lock_error;
  switch (static_cast<DWORD>(ec.value())) {
    case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY: case ERROR_TOO_MANY_OPEN_FILES:
    case ERROR_NO_SYSTEM_RESOURCES: case ERROR_COMMITMENT_LIMIT: return exit_os_error;
    case ERROR_WRITE_PROTECT: case ERROR_DISK_FULL: case ERROR_HANDLE_DISK_FULL:
    case 1295 /* ERROR_DISK_QUOTA_EXCEEDED */: return exit_cannot_create;
    case ERROR_IO_DEVICE: case ERROR_CRC: case ERROR_READ_FAULT: case ERROR_WRITE_FAULT: case ERROR_GEN_FAILURE:
    case ERROR_SEM_TIMEOUT: case ERROR_NETNAME_DELETED: case ERROR_UNEXP_NET_ERR: return exit_lock_error;
    default: return exit_cannot_open;
  }
}

}  // namespace lockrun
