// The Windows suite's main(): the Catch2 session, or, with --helper, one of
// the helper roles the multi-process tests start this same program in.
#include "windows_support.hpp"

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <shellapi.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

// This process's arguments as Windows passed them (wide, split by the C
// runtime's rules): argv is in the ANSI code page.
std::vector<std::wstring> wide_arguments() {
  int count = 0;
  LPWSTR* words = ::CommandLineToArgvW(::GetCommandLineW(), &count);
  std::vector<std::wstring> out(words, words + count);
  ::LocalFree(static_cast<HLOCAL>(words));
  return out;
}

// Roles for the lockrun tests, on wide arguments (after "--helper ROLE"):
//   exit N             exit with N
//   args OUT ARG...    write each ARG as one UTF-8 line to OUT
//   exists PATH        exit 0 when PATH exists, 1 when not
//   wait-killed OUT    write this process's pid to OUT, then wait (at most
//                      60 s) to be killed
//   wait-break OUT     as wait-killed, but exit 42 on Ctrl-Break (or Ctrl-C)
int lockrun_role(const std::wstring& role, const std::vector<std::wstring>& args) {
  const auto write_lines = [](const std::wstring& out, auto begin, auto end) {
    std::ofstream file(std::filesystem::path(out), std::ios::binary);
    for (auto it = begin; it != end; ++it) file << lockfile_windows::utf8(*it) << "\n";
  };
  if (role == L"exit" && !args.empty()) return std::stoi(args[0]);
  if (role == L"args" && !args.empty()) {
    write_lines(args[0], args.begin() + 1, args.end());
    return 0;
  }
  if (role == L"exists" && args.size() == 1) return std::filesystem::exists(std::filesystem::path(args[0])) ? 0 : 1;
  if ((role == L"wait-killed" || role == L"wait-break") && args.size() == 1) {
    static HANDLE broken = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (role == L"wait-break")
      ::SetConsoleCtrlHandler(
          [](DWORD type) -> BOOL {
            if (type != CTRL_BREAK_EVENT && type != CTRL_C_EVENT) return FALSE;
            ::SetEvent(broken);
            return TRUE;
          },
          TRUE);
    const std::wstring pid = std::to_wstring(::GetCurrentProcessId());
    write_lines(args[0] + L".tmp", &pid, &pid + 1);
    std::filesystem::rename(std::filesystem::path(args[0] + L".tmp"), std::filesystem::path(args[0]));
    return ::WaitForSingleObject(broken, 60000) == WAIT_OBJECT_0 ? 42 : 3;
  }
  return -1;
}

// hold PATH READY [STALE_MS [fencing]]: acquire PATH, create READY (which
// holds the fencing token with "fencing"), then hold until PATH.release
// appears (or the process is killed).
int hold(const std::filesystem::path& path, const std::filesystem::path& ready, int stale_ms, bool fencing) {
  lockfile::Options options;
  options.lease_stale_threshold = std::chrono::milliseconds(stale_ms);
  options.lease_heartbeat_interval = std::chrono::milliseconds(std::max(stale_ms / 6, 10));
  options.fencing = fencing;
  lockfile::PIDLock lock(path, options);
  if (!lock.try_lock_for(std::chrono::seconds(30))) return 3;
  if (fencing) {
    auto written = ready;
    written += ".tmp";
    std::ofstream(written) << lock.fencing_token() << "\n";
    std::filesystem::rename(written, ready);
  } else {
    lockfile_windows::touch(ready);
  }
  auto release = path;
  release += ".release";
  while (!std::filesystem::exists(release)) ::Sleep(5);
  lock.release();
  return 0;
}

// contend PATH INSIDE ROUNDS [STALE_MS]: ROUNDS times, wait for PATH, and
// while holding it create INSIDE exclusively, pause, and remove it: a second
// holder at the same moment finds INSIDE there (exit 2).
int contend(const std::filesystem::path& path, const std::filesystem::path& inside, int rounds, int stale_ms) {
  lockfile::Options options;
  options.lease_stale_threshold = std::chrono::milliseconds(stale_ms);
  options.lease_heartbeat_interval = std::chrono::milliseconds(std::max(stale_ms / 6, 10));
  lockfile::PIDLock lock(path, options);
  for (int round = 0; round < rounds; ++round) {
    if (!lock.try_lock_for(std::chrono::seconds(60))) return 3;
    const HANDLE marker = ::CreateFileW(inside.c_str(), GENERIC_WRITE, 0, nullptr, CREATE_NEW, 0, nullptr);
    if (marker == INVALID_HANDLE_VALUE) return 2;
    ::CloseHandle(marker);
    ::Sleep(1);
    if (!::DeleteFileW(inside.c_str())) return 4;
    lock.unlock();
  }
  return 0;
}

// try-once PATH WON: one try_lock(); on success create WON and hold until
// PATH.release appears (exit 0); else exit 1.
int try_once(const std::filesystem::path& path, const std::filesystem::path& won) {
  lockfile::PIDLock lock(path, {.lease_stale_threshold = std::chrono::seconds(60)});
  if (!lock.try_lock()) return 1;
  lockfile_windows::touch(won);
  auto release = path;
  release += ".release";
  while (!std::filesystem::exists(release)) ::Sleep(5);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--helper") {
    try {
      const std::string role = argc >= 3 ? argv[2] : "";
      const auto wide = wide_arguments();
      if (wide.size() >= 3) {
        const int result = lockrun_role(wide[2], {wide.begin() + 3, wide.end()});
        if (result != -1) return result;
      }
      if (role == "contend" && argc >= 6)
        return contend(std::filesystem::u8path(argv[3]), std::filesystem::u8path(argv[4]), std::stoi(argv[5]),
                       argc >= 7 ? std::stoi(argv[6]) : 60000);
      if (role == "try-once" && argc >= 5)
        return try_once(std::filesystem::u8path(argv[3]), std::filesystem::u8path(argv[4]));
      if (role == "hold" && argc >= 5)
        return hold(std::filesystem::u8path(argv[3]), std::filesystem::u8path(argv[4]),
                    argc >= 6 ? std::stoi(argv[5]) : 60000, argc >= 7 && std::string(argv[6]) == "fencing");
      std::fprintf(stderr, "unknown helper role\n");
      return 64;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "helper: %s\n", e.what());
      return 70;
    }
  }
  return Catch::Session().run(argc, argv);
}
