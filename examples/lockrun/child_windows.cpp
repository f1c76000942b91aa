// Starting COMMAND and supervising it, on Windows: CreateProcessW on a wide
// command line quoted as the C runtime splits it, in a job object that ends
// the command when lockrun ends, a lost lease acted on, the exit code passed
// through.
//
//   - The job has JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, and lockrun holds its
//     only handle: when lockrun exits or is killed (TerminateProcess, a
//     crash), the system closes it and ends every process still in the job,
//     so the command never runs on without the lock. The command starts
//     suspended and runs only once it is in the job. This reaches the
//     processes the command started too, unlike PR_SET_PDEATHSIG on Linux.
//   - The command shares lockrun's console: Ctrl-C and Ctrl-Break reach it
//     from the console directly (events_windows.cpp), and lockrun ignores
//     them while it runs.
//   - There is no SIGTERM to send a console program that shares our
//     console without sending it to everything on that console (the shell
//     too), so --on-lost term and kill both end the job at once
//     (TerminateJobObject, exit code 76); --kill-after has nothing to wait
//     for.
//   - The command inherits stdin, stdout and stderr (made inheritable for
//     it) and the environment; the lock's handles and ours are never
//     inheritable.
#include "lockrun.hpp"

namespace lockrun {

namespace {

class owned_handle {
 public:
  explicit owned_handle(HANDLE handle = nullptr) : handle_(handle) {}
  ~owned_handle() {
    if (handle_ != nullptr && handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
  }
  owned_handle(const owned_handle&) = delete;
  owned_handle& operator=(const owned_handle&) = delete;
  HANDLE get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr && handle_ != INVALID_HANDLE_VALUE; }

 private:
  HANDLE handle_;
};

std::string message_of(DWORD error) { return std::error_code(static_cast<int>(error), std::system_category()).message(); }

// One argument as the C runtime (and CommandLineToArgvW) reads it back:
// as it is when it has no space, tab, newline or quote and is not empty;
// else in quotes, a quote inside as \", and backslashes doubled where they
// come before a quote (or the closing one), single elsewhere.
void append_quoted(std::wstring& line, std::wstring_view argument) {
  if (!argument.empty() && argument.find_first_of(L" \t\n\v\"") == std::wstring_view::npos) {
    line += argument;
    return;
  }
  line += L'"';
  std::size_t backslashes = 0;
  for (const wchar_t c : argument) {
    if (c == L'\\') {
      ++backslashes;
      continue;
    }
    if (c == L'"') line.append(backslashes * 2 + 1, L'\\');
    else line.append(backslashes, L'\\');
    backslashes = 0;
    line += c;
  }
  line.append(backslashes * 2, L'\\');
  line += L'"';
}

// The command line and, for -c, the program (cmd.exe, never searched for).
// cmd.exe /s /c takes the rest of its line as it is, between the first and
// the last quote: STRING goes in unescaped.
std::wstring command_line_for(const config& cfg, std::wstring& application) {
  std::wstring line;
  if (cfg.command_string != nullptr) {
    application = wide_of(cfg.command[0]);
    append_quoted(line, application);
    line += L" /d /s /c \"" + wide_of(cfg.command_string) + L"\"";
    return line;
  }
  for (std::size_t k = 0; k + 1 < cfg.command.size(); ++k) {
    if (k > 0) line += L' ';
    append_quoted(line, wide_of(cfg.command[k]));
  }
  return line;
}

// The standard handles, inheritable, for STARTF_USESTDHANDLES.
void pass_standard_handles(STARTUPINFOW& startup) {
  startup.dwFlags |= STARTF_USESTDHANDLES;
  startup.hStdInput = ::GetStdHandle(STD_INPUT_HANDLE);
  startup.hStdOutput = ::GetStdHandle(STD_OUTPUT_HANDLE);
  startup.hStdError = ::GetStdHandle(STD_ERROR_HANDLE);
  for (const HANDLE handle : {startup.hStdInput, startup.hStdOutput, startup.hStdError})
    if (handle != nullptr && handle != INVALID_HANDLE_VALUE)
      ::SetHandleInformation(handle, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
}

// The exit status for an error of CreateProcessW, as the shell's.
int exit_status_of_start(DWORD error) {
  switch (error) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_NAME:
    case ERROR_BAD_NETPATH: return exit_not_found;
    default: return exit_cannot_execute;
  }
}

}  // namespace

int run_command(const config& cfg, const signal_setup&) {
  const owned_handle job(::CreateJobObjectW(nullptr, nullptr));
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits{};
  limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
  if (!job || !::SetInformationJobObject(job.get(), JobObjectExtendedLimitInformation, &limits, sizeof limits)) {
    say("cannot make a job object for the command: " + message_of(::GetLastError()));
    return exit_os_error;
  }

  std::wstring application;
  std::wstring line = command_line_for(cfg, application);
  STARTUPINFOW startup{};
  startup.cb = sizeof startup;
  pass_standard_handles(startup);
  PROCESS_INFORMATION started{};
  // CREATE_SUSPENDED: it runs no instruction outside the job.
  if (!::CreateProcessW(application.empty() ? nullptr : application.c_str(), line.data(), nullptr, nullptr, TRUE,
                        CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT, nullptr, nullptr, &startup, &started)) {
    const DWORD error = ::GetLastError();
    say(std::string("cannot run '") + cfg.command[0] + "': " + message_of(error));
    return exit_status_of_start(error);
  }
  const owned_handle process(started.hProcess);
  const owned_handle thread(started.hThread);
  if (!::AssignProcessToJobObject(job.get(), process.get())) {
    // Fail closed: a command outside the job could outlive lockrun.
    const DWORD error = ::GetLastError();
    ::TerminateProcess(process.get(), exit_os_error);
    say(std::string("cannot put '") + cfg.command[0] + "' in a job object: " + message_of(error));
    return exit_os_error;
  }
  ::ResumeThread(thread.get());

  bool lost = false;
  watched exit_of_command[] = {{process.get(), 0}};
  for (;;) {
    const std::string events = next_events(-1, exit_of_command);
    // The command first: once it has exited, a loss that raced with its exit
    // no longer concerns it.
    if (exit_of_command[0].revents != 0) break;
    for (const char c : events) {
      // Console events reached the command from the console itself.
      if (static_cast<unsigned char>(c) != event_lease_lost || lost) continue;
      lost = true;
      if (cfg.on_lost == lost_action::ignore) {
        say("lost the lease on " + cfg.lock_file + "; the command runs on (--on-lost ignore)");
      } else {
        say("lost the lease on " + cfg.lock_file + "; ending the command");
        ::TerminateJobObject(job.get(), exit_lease_lost);
      }
    }
  }

  DWORD code = 0;
  if (!::GetExitCodeProcess(process.get(), &code)) {
    say("cannot read the command's exit code: " + message_of(::GetLastError()));
    return exit_os_error;
  }
  // As on POSIX: after a loss lockrun acted on, 76 unless the command exited
  // non-zero on its own (the job ends it with 76 itself).
  if (lost && cfg.on_lost != lost_action::ignore && code == 0) return exit_lease_lost;
  return static_cast<int>(code);
}

}  // namespace lockrun
