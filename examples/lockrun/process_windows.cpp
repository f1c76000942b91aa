// What lockrun learns of other processes on Windows: whether a pid still
// names the process a lease was written by (its creation time is the
// record's startTime), and its command line. Everything here answers
// "unknown" (0, empty) where the system cannot tell.
#include "lockrun.hpp"

#include <shellapi.h>

namespace lockrun {

namespace {

class process_handle {
 public:
  explicit process_handle(pid_t pid)
      : handle_(pid > 0 ? ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE, FALSE, static_cast<DWORD>(pid))
                        : nullptr) {}
  ~process_handle() {
    if (handle_ != nullptr) ::CloseHandle(handle_);
  }
  process_handle(const process_handle&) = delete;
  process_handle& operator=(const process_handle&) = delete;
  HANDLE get() const { return handle_; }

 private:
  HANDLE handle_;
};

// The host name as the library records it (GetComputerNameExW, DNS host name).
std::string our_host() {
  wchar_t buffer[256] = {};
  DWORD size = 255;
  if (!::GetComputerNameExW(ComputerNameDnsHostname, buffer, &size)) return {};
  return utf8_of(std::wstring_view(buffer, size));
}

// The command line another process was started with: NtQueryInformationProcess
// (ProcessCommandLineInformation, Windows 8.1 and later), else its image.
std::wstring command_line_text(HANDLE process) {
  struct unicode_string {
    USHORT length;
    USHORT maximum_length;
    PWSTR buffer;
  };
  using query_fn = LONG(WINAPI*)(HANDLE, int, void*, ULONG, ULONG*);
  if (const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll")) {
    // Through void(*)(): the one cast between function types that is defined.
    const auto query = reinterpret_cast<query_fn>(  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
        reinterpret_cast<void (*)()>(::GetProcAddress(ntdll, "NtQueryInformationProcess")));  // NOLINT
    alignas(unicode_string) unsigned char buffer[8192] = {};
    ULONG size = 0;
    constexpr int process_command_line_information = 60;
    if (query != nullptr && query(process, process_command_line_information, buffer, sizeof buffer, &size) >= 0) {
      const auto* line = reinterpret_cast<const unicode_string*>(buffer);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
      if (line->buffer != nullptr && line->length > 0) return std::wstring(line->buffer, line->length / sizeof(wchar_t));
    }
  }
  wchar_t image[MAX_PATH] = {};
  DWORD size = MAX_PATH;
  if (::QueryFullProcessImageNameW(process, 0, image, &size)) return L"\"" + std::wstring(image, size) + L"\"";
  return {};
}

}  // namespace

// The state ('R' running, 'Z' exited but not yet gone) and creation time;
// the parent is not looked up (0).
std::optional<process_info> read_process(pid_t pid) {
  const process_handle process(pid);
  if (process.get() == nullptr) return std::nullopt;
  process_info info;
  info.state = ::WaitForSingleObject(process.get(), 0) == WAIT_OBJECT_0 ? 'Z' : 'R';
  FILETIME created{}, exited{}, kernel{}, user{};
  if (::GetProcessTimes(process.get(), &created, &exited, &kernel, &user))
    info.start_time = (static_cast<unsigned long long>(created.dwHighDateTime) << 32) | created.dwLowDateTime;
  return info;
}

bool is_running(pid_t pid, unsigned long long start_time) {
  const auto info = read_process(pid);
  if (!info) return false;
  return info->state != 'Z' && (start_time == 0 || info->start_time == start_time);
}

std::vector<std::string> command_line_of(pid_t pid) {
  const process_handle process(pid);
  if (process.get() == nullptr) return {};
  const std::wstring line = command_line_text(process.get());
  if (line.empty()) return {};
  int count = 0;
  LPWSTR* words = ::CommandLineToArgvW(line.c_str(), &count);
  if (words == nullptr) return {utf8_of(line)};
  std::vector<std::string> args;
  for (int k = 0; k < count; ++k) args.push_back(utf8_of(words[k]));
  ::LocalFree(static_cast<HLOCAL>(words));
  return args;
}

// One PID space per machine: a record written on this host (the library
// stands a hash of the host name in for the PID namespace). A pid from
// before a reboot is told apart by its creation time (is_running).
bool lease_is_local(const lockfile::Lease& lease) {
  static const std::string host = our_host();
  return !host.empty() && lease.host == host;
}

}  // namespace lockrun
