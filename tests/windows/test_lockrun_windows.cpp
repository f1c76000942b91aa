// lockrun on Windows: lockrun.exe run as a real process (CreateProcessW),
// its commands being this program's --helper roles (windows_main.cpp).
// Where wine differs from Windows, the test says so.
#include "windows_support.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <vector>

using namespace std::chrono_literals;
using lockfile_windows::eventually;
using lockfile_windows::scratch_dir;

#if defined(LOCKFILE_LOCKRUN)

namespace {

// The lockrun.exe CMake built. The cross build names it by its Linux path;
// under wine, drive Z: is the Linux root.
std::wstring lockrun_exe() {
  std::string path = LOCKFILE_LOCKRUN;
  if (!path.empty() && path.front() == '/') {
    for (char& c : path)
      if (c == '/') c = '\\';
    path = "Z:" + path;
  }
  return std::filesystem::path(path).wstring();
}

std::wstring self_exe() {
  wchar_t self[MAX_PATH] = {};
  ::GetModuleFileNameW(nullptr, self, MAX_PATH);
  return self;
}

// As the C runtime reads it back (written apart from lockrun's own).
std::wstring quote(const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) return arg;
  std::wstring out = L"\"";
  for (std::size_t i = 0;; ++i) {
    std::size_t slashes = 0;
    while (i < arg.size() && arg[i] == L'\\') ++i, ++slashes;
    if (i == arg.size()) {
      out.append(slashes * 2, L'\\');
      break;
    }
    out.append(arg[i] == L'"' ? slashes * 2 + 1 : slashes, L'\\');
    out += arg[i];
  }
  return out + L"\"";
}

std::string contents(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// lockrun.exe ARGS, its stdout and stderr in files of `dir`. Killed (if
// still running) when it goes out of scope.
class lockrun_process {
 public:
  lockrun_process(const scratch_dir& dir, const std::vector<std::wstring>& args, DWORD flags = 0)
      : out_(dir / "lockrun.out"), err_(dir / "lockrun.err") {
    std::wstring line = quote(lockrun_exe());
    for (const auto& arg : args) line += L" " + quote(arg);
    SECURITY_ATTRIBUTES inherit{sizeof inherit, nullptr, TRUE};
    const HANDLE out = ::CreateFileW(out_.c_str(), GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit,
                                     CREATE_ALWAYS, 0, nullptr);
    const HANDLE err = ::CreateFileW(err_.c_str(), GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit,
                                     CREATE_ALWAYS, 0, nullptr);
    STARTUPINFOW startup{};
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = nullptr;
    startup.hStdOutput = out;
    startup.hStdError = err;
    const std::wstring exe = lockrun_exe();
    const BOOL made =
        ::CreateProcessW(exe.c_str(), line.data(), nullptr, nullptr, TRUE, flags, nullptr, nullptr, &startup, &info_);
    const DWORD error = ::GetLastError();
    ::CloseHandle(out);
    ::CloseHandle(err);
    if (!made) throw std::system_error(static_cast<int>(error), std::system_category(), "CreateProcessW lockrun");
    ::CloseHandle(info_.hThread);
  }
  ~lockrun_process() {
    if (::WaitForSingleObject(info_.hProcess, 0) == WAIT_TIMEOUT) kill();
    ::CloseHandle(info_.hProcess);
  }
  lockrun_process(const lockrun_process&) = delete;
  lockrun_process& operator=(const lockrun_process&) = delete;

  int pid() const { return static_cast<int>(info_.dwProcessId); }
  void kill() {
    ::TerminateProcess(info_.hProcess, 137);
    ::WaitForSingleObject(info_.hProcess, INFINITE);
  }
  // The exit code, or -1 when it has not exited within the limit.
  int wait(std::chrono::milliseconds limit = 30s) {
    if (::WaitForSingleObject(info_.hProcess, static_cast<DWORD>(limit.count())) != WAIT_OBJECT_0) return -1;
    DWORD code = 0;
    ::GetExitCodeProcess(info_.hProcess, &code);
    return static_cast<int>(code);
  }
  std::string out() const { return contents(out_); }
  std::string err() const { return contents(err_); }

 private:
  std::filesystem::path out_, err_;
  PROCESS_INFORMATION info_{};
};

struct result {
  int exit = -1;
  std::string out, err;
};

result run_lockrun(const scratch_dir& dir, const std::vector<std::wstring>& args) {
  lockrun_process lockrun(dir, args);
  result r;
  r.exit = lockrun.wait();
  r.out = lockrun.out();
  r.err = lockrun.err();
  return r;
}

// FILE then this program as the command, in role ROLE.
std::vector<std::wstring> helper_command(std::initializer_list<std::wstring> role_and_args) {
  std::vector<std::wstring> args{self_exe(), L"--helper"};
  args.insert(args.end(), role_and_args);
  return args;
}

std::vector<std::wstring> operator+(std::vector<std::wstring> a, const std::vector<std::wstring>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::optional<int> read_pid(const std::filesystem::path& file) {
  std::ifstream in(file);
  int pid = 0;
  if (in >> pid) return pid;
  return std::nullopt;
}

bool process_exits(int pid, std::chrono::milliseconds limit) {
  const HANDLE process = ::OpenProcess(SYNCHRONIZE, FALSE, static_cast<DWORD>(pid));
  if (process == nullptr) return true;  // gone already
  const bool exited = ::WaitForSingleObject(process, static_cast<DWORD>(limit.count())) == WAIT_OBJECT_0;
  ::CloseHandle(process);
  return exited;
}

}  // namespace

TEST_CASE("lockrun runs a command under the lock and exits with its exit code", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  // The command sees the lock file (held) and exits with its own code.
  auto r = run_lockrun(dir, std::vector<std::wstring>{lock.wstring()} + helper_command({L"exists", lock.wstring()}));
  CHECK(r.exit == 0);
  r = run_lockrun(dir, std::vector<std::wstring>{lock.wstring()} + helper_command({L"exit", L"7"}));
  CHECK(r.exit == 7);
  CHECK(r.err.empty());
  // Released afterwards.
  CHECK_FALSE(std::filesystem::exists(lock));
}

TEST_CASE("lockrun passes arguments on quoted as the C runtime reads them back", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir.path() / L"\u9396.lock";  // outside the ANSI code page
  const auto out = dir / "args.txt";
  const std::vector<std::wstring> given = {L"plain",          L"two words",    L"",
                                           L"quote\"inside",  L"trailing\\",   L"back\\\\slash \"x\"",
                                           L"tab\there",      L"\\\\server\\share\\", L"\u9396-\u0444"};
  std::vector<std::wstring> args{lock.wstring(), self_exe(), L"--helper", L"args", out.wstring()};
  args.insert(args.end(), given.begin(), given.end());
  const auto r = run_lockrun(dir, args);
  REQUIRE(r.exit == 0);
  std::string expected;
  for (const auto& arg : given) expected += lockfile_windows::utf8(arg) + "\n";
  CHECK(contents(out) == expected);
}

TEST_CASE("lockrun -n on a held lock exits 1 without running the command", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  auto holder = lockfile_windows::start_holder(lock, 60000);
  const auto ran = dir / "ran.txt";
  auto r = run_lockrun(dir, std::vector<std::wstring>{L"-n", lock.wstring()} +
                                helper_command({L"args", ran.wstring(), L"x"}));
  CHECK(r.exit == 1);
  CHECK(r.err.empty());  // quiet, as flock(1)
  CHECK_FALSE(std::filesystem::exists(ran));
  // -E picks the code; --verbose names the holder.
  r = run_lockrun(dir, std::vector<std::wstring>{L"-n", L"-E", L"9", L"--verbose", lock.wstring()} +
                           helper_command({L"args", ran.wstring(), L"x"}));
  CHECK(r.exit == 9);
  CHECK(r.err.find("held by pid " + std::to_string(holder->pid())) != std::string::npos);
  // -w gives up after its time.
  const auto start = std::chrono::steady_clock::now();
  r = run_lockrun(dir, std::vector<std::wstring>{L"-w", L"0.3", lock.wstring()} +
                           helper_command({L"args", ran.wstring(), L"x"}));
  CHECK(r.exit == 1);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  CHECK_FALSE(std::filesystem::exists(ran));
  lockfile_windows::let_holder_release(lock);
  CHECK(holder->wait() == 0);
}

TEST_CASE("a killed lockrun ends its command through the job object and the lock is taken over at once",
          "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  const auto pid_file = dir / "command.pid";
  lockrun_process lockrun(dir, std::vector<std::wstring>{L"--stale", L"60", lock.wstring()} +
                                   helper_command({L"wait-killed", pid_file.wstring()}));
  REQUIRE(eventually([&] { return read_pid(pid_file).has_value(); }));
  const int command = *read_pid(pid_file);
  lockrun.kill();  // TerminateProcess: nothing of lockrun's runs
  // The job's last handle closed with lockrun: the command ends too.
  CHECK(process_exits(command, 10s));
  // A 60 s lease, taken over at once: its owner is provably dead.
  lockfile::PIDLock next(lock, {.lease_stale_threshold = 60s});
  const auto start = std::chrono::steady_clock::now();
  CHECK(next.try_lock_for(20s));
  CHECK(std::chrono::steady_clock::now() - start < 10s);
}

TEST_CASE("lockrun --status and --holder exit 0 free 1 held 2 stale and 3 foreign", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  auto r = run_lockrun(dir, {L"--status", lock.wstring()});
  CHECK(r.exit == 0);
  CHECK(r.out.find("\"state\":\"free\"") != std::string::npos);
  {
    auto holder = lockfile_windows::start_holder(lock, 60000);
    r = run_lockrun(dir, {L"--status", lock.wstring()});
    CHECK(r.exit == 1);
    CHECK(r.out.find("\"state\":\"held\"") != std::string::npos);
    CHECK(r.out.find("\"pid\":" + std::to_string(holder->pid())) != std::string::npos);
    r = run_lockrun(dir, {L"--holder", lock.wstring()});
    CHECK(r.exit == 1);
    // The holder runs on this machine: its command line is named.
    CHECK(r.out.find("held by pid " + std::to_string(holder->pid()) + " (") != std::string::npos);
    lockfile_windows::let_holder_release(lock);
    CHECK(holder->wait() == 0);
  }
  lockfile::Lease old;
  old.owner_id = "1-1-1-abc";
  old.pid = 1;
  old.host = "elsewhere";
  old.heartbeat = std::chrono::system_clock::now() - 60s;
  std::ofstream(lock, std::ios::binary) << lockfile::format_lease(old);
  r = run_lockrun(dir, {L"--status", lock.wstring()});
  CHECK(r.exit == 2);
  std::ofstream(lock, std::ios::binary | std::ios::trunc) << "my notes\n";
  r = run_lockrun(dir, {L"--status", lock.wstring()});
  CHECK(r.exit == 3);
  // The foreign file is refused for a command too, and left as it is.
  r = run_lockrun(dir, std::vector<std::wstring>{lock.wstring()} + helper_command({L"exit", L"0"}));
  CHECK(r.exit == 74);
  CHECK(contents(lock) == "my notes\n");
}

TEST_CASE("lockrun -c runs the string through cmd.exe as it is", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  auto r = run_lockrun(dir, {lock.wstring(), L"-c", L"exit /b 5"});
  CHECK(r.exit == 5);
  // Quotes and operators reach cmd.exe unescaped (/s /c): the lock file is
  // there while the string runs, and && chains.
  const auto marker = dir / "marker.txt";
  r = run_lockrun(dir, {lock.wstring(), L"-c",
                        L"if exist \"" + lock.wstring() + L"\" (echo held> \"" + marker.wstring() +
                            L"\") && exit /b 3"});
  CHECK(r.exit == 3);
  CHECK(contents(marker).rfind("held", 0) == 0);
}

TEST_CASE("lockrun exits 127 for a command not found and 126 for one that cannot be executed", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  auto r = run_lockrun(dir, {lock.wstring(), (dir / "no-such-program.exe").wstring()});
  CHECK(r.exit == 127);
  CHECK(r.err.find("cannot run") != std::string::npos);
  const auto not_a_program = dir / "text.exe";
  std::ofstream(not_a_program, std::ios::binary) << "just text, not a program\n";
  r = run_lockrun(dir, {lock.wstring(), not_a_program.wstring()});
  CHECK(r.exit == 126);
  CHECK_FALSE(std::filesystem::exists(lock));  // released
}

TEST_CASE("a lost lease ends the command and lockrun exits 76", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  const auto pid_file = dir / "command.pid";
  lockrun_process lockrun(dir, std::vector<std::wstring>{L"--stale", L"2", L"--heartbeat", L"50", lock.wstring()} +
                                   helper_command({L"wait-killed", pid_file.wstring()}));
  REQUIRE(eventually([&] { return read_pid(pid_file).has_value(); }));
  // Someone else's record at the path: the next renewal sees the loss.
  lockfile::Lease other;
  other.owner_id = "2-2-2-other";
  other.pid = 2;
  other.host = "elsewhere";
  other.heartbeat = std::chrono::system_clock::now();
  std::ofstream(lock, std::ios::binary | std::ios::trunc) << lockfile::format_lease(other);
  CHECK(lockrun.wait(20s) == 76);
  CHECK(process_exits(*read_pid(pid_file), 10s));
  CHECK(lockrun.err().find("lost the lease") != std::string::npos);
}

TEST_CASE("lockrun --hold and --release are refused on Windows with exit 64", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  auto r = run_lockrun(dir, {L"--hold", lock.wstring()});
  CHECK(r.exit == 64);
  CHECK(r.err.find("not supported on Windows") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(lock));
  r = run_lockrun(dir, {L"--release", lock.wstring()});
  CHECK(r.exit == 64);
}

TEST_CASE("lockrun ignores Ctrl-Break while the command runs and reports the command's exit code", "[lockrun]") {
  scratch_dir dir;
  const auto lock = dir / "app.lock";
  const auto pid_file = dir / "command.pid";
  // lockrun and its command in a process group of their own, on this
  // program's console, so that Ctrl-Break can be sent to them alone.
  // Wine: a test process under ctest has no console, and wine 8 cannot make
  // one without a display (AllocConsole fails), so this skips there; on
  // Windows it runs.
  if (::GetConsoleWindow() == nullptr && !::AllocConsole()) {
    WARN("no console to send Ctrl-Break on (AllocConsole failed; wine makes none without a display): skipped");
    return;
  }
  lockrun_process lockrun(dir, std::vector<std::wstring>{lock.wstring()} +
                                   helper_command({L"wait-break", pid_file.wstring()}),
                          CREATE_NEW_PROCESS_GROUP);
  REQUIRE(eventually([&] { return read_pid(pid_file).has_value(); }));
  if (!::GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, static_cast<DWORD>(lockrun.pid()))) {
    WARN("GenerateConsoleCtrlEvent failed (error " << ::GetLastError() << "): skipped");
    return;
  }
  const int code = lockrun.wait(10s);
  if (code == -1) {
    WARN("Ctrl-Break reached neither lockrun nor its command (a console that does not deliver it): skipped");
    return;
  }
  // The command caught it and exited 42; lockrun ignored it and passed 42 on.
  CHECK(code == 42);
}

#else

TEST_CASE("lockrun tests need lockrun (LOCKFILE_BUILD_LOCKRUN)", "[lockrun]") {
  WARN("lockrun was not built: skipped");
}

#endif
