// What the Windows tests share: a scratch directory per test, helper
// processes (this same program with --helper), and waiting with a deadline.
#pragma once

#include <lockfile/lockfile.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace lockfile_windows {

inline void touch(const std::filesystem::path& path) { std::ofstream(path) << "ready\n"; }

// Wine's ntdll exports wine_get_version; Windows' does not.
inline bool running_under_wine() {
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

inline std::string utf8(std::wstring_view text) {
  if (text.empty()) return {};
  const int size =
      ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0, nullptr, nullptr);
  std::string out(static_cast<std::size_t>(size > 0 ? size : 0), '\0');
  if (size > 0)
    ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), size, nullptr, nullptr);
  return out;
}

// A fresh directory under the temporary directory, removed afterwards.
class scratch_dir {
 public:
  scratch_dir() : scratch_dir(std::filesystem::temp_directory_path()) {}
  explicit scratch_dir(const std::filesystem::path& root) {
    static int count = 0;
    path_ = root / ("lockfile-win-" + std::to_string(::GetCurrentProcessId()) + "-" + std::to_string(++count));
    remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() { remove_all(path_); }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const char* leaf) const { return path_ / leaf; }

 private:
  // Through the extended-length prefix: a test's tree may hold paths past
  // MAX_PATH, which the C++ library's own calls cannot remove.
  static void remove_all(const std::filesystem::path& path) {
    std::error_code ec;
    std::filesystem::remove_all(L"\\\\?\\" + std::filesystem::absolute(path).wstring(), ec);
  }

  std::filesystem::path path_;
};

// Waits until done() holds or the deadline passes; true when it held.
template <class Condition>
bool eventually(Condition done, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    ::Sleep(2);
  }
  return true;
}

// A helper process: this program with --helper ROLE ARGS.... Killed (if
// still running) when it goes out of scope.
class helper_process {
 public:
  explicit helper_process(const std::wstring& arguments) {
    wchar_t self[MAX_PATH] = {};
    ::GetModuleFileNameW(nullptr, self, MAX_PATH);
    std::wstring command = L"\"" + std::wstring(self) + L"\" --helper " + arguments;
    STARTUPINFOW startup{};
    startup.cb = sizeof startup;
    // Wine now and then fails a CreateProcessW with ERROR_INTERNAL_ERROR
    // under load (seen once in the suite); Windows does not: try again.
    BOOL started = FALSE;
    for (int attempt = 0; attempt < 3 && started == FALSE; ++attempt) {
      started = ::CreateProcessW(self, command.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr, &startup, &info_);
      if (started == FALSE && ::GetLastError() != ERROR_INTERNAL_ERROR) break;
    }
    if (started == FALSE)
      throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), "CreateProcessW");
    ::CloseHandle(info_.hThread);
  }
  ~helper_process() {
    if (::WaitForSingleObject(info_.hProcess, 0) == WAIT_TIMEOUT) kill();
    ::CloseHandle(info_.hProcess);
  }
  helper_process(const helper_process&) = delete;
  helper_process& operator=(const helper_process&) = delete;

  int pid() const { return static_cast<int>(info_.dwProcessId); }
  void kill() {
    ::TerminateProcess(info_.hProcess, 137);
    ::WaitForSingleObject(info_.hProcess, INFINITE);
  }
  // The exit code, or -1 when it has not exited within the limit.
  int wait(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    if (::WaitForSingleObject(info_.hProcess, static_cast<DWORD>(limit.count())) != WAIT_OBJECT_0) return -1;
    DWORD code = 0;
    ::GetExitCodeProcess(info_.hProcess, &code);
    return static_cast<int>(code);
  }

 private:
  PROCESS_INFORMATION info_{};
};

inline std::wstring quoted(const std::filesystem::path& path) { return L"\"" + path.wstring() + L"\""; }

// Starts a helper that holds path (with a fencing token when `fencing`,
// which it writes to path.ready), and waits until it does.
inline std::unique_ptr<helper_process> start_holder(const std::filesystem::path& path, int stale_ms = 60000,
                                                    bool fencing = false) {
  auto ready = path;
  ready += ".ready";
  auto holder = std::make_unique<helper_process>(L"hold " + quoted(path) + L" " + quoted(ready) + L" " +
                                                 std::to_wstring(stale_ms) + (fencing ? L" fencing" : L""));
  if (!eventually([&] { return std::filesystem::exists(ready); }))
    throw std::runtime_error("the holder did not take the lock in time");
  return holder;
}

inline void let_holder_release(const std::filesystem::path& path) {
  auto release = path;
  release += ".release";
  touch(release);
}

}  // namespace lockfile_windows
