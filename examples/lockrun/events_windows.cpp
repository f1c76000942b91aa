// The event queue and the console control handler, on Windows.
//
// There is no self-pipe here: events (a lost lease from the library's
// notifier thread, the end of a wait, a console control event from the
// thread the system starts for its handler) go into a queue under a mutex,
// and a manual-reset event object says that the queue is not empty. The main
// thread waits on that event, and on the handles it watches beside it (the
// command's process), with WaitForMultipleObjects.
//
// Console control events: Ctrl-C and Ctrl-Break go to every process
// attached to the console, the command included (it shares lockrun's
// console and process group), much as a terminal signals its foreground
// process group on POSIX. So they are posted as "from the terminal": they
// cancel a wait for the lock, and while the command runs lockrun ignores
// them (its handler returns TRUE) and reports the command's exit code. A
// console that was told to ignore Ctrl-C when lockrun started (the flag a
// CREATE_NEW_PROCESS_GROUP child inherits) stays so, for lockrun and for the
// command.
#include "lockrun.hpp"

#include <csignal>
#include <iterator>
#include <mutex>

namespace lockrun {

namespace {

// What the console sends when its window closes, the user logs off or the
// system shuts down, numbered as POSIX numbers a hangup.
constexpr int console_closed = 1;

std::mutex queue_mutex;
std::string queue;               // guarded by queue_mutex
HANDLE queue_ready = nullptr;    // set while the queue is not empty; made once

BOOL WINAPI on_console_event(DWORD type) {
  switch (type) {
    case CTRL_C_EVENT: post_event(static_cast<unsigned char>(SIGINT | from_terminal)); return TRUE;
    case CTRL_BREAK_EVENT: post_event(static_cast<unsigned char>(SIGBREAK | from_terminal)); return TRUE;
    case CTRL_CLOSE_EVENT:
    case CTRL_LOGOFF_EVENT:
    case CTRL_SHUTDOWN_EVENT:
      // The system ends lockrun soon after this returns; the job object
      // (child_windows.cpp) then ends the command, and the dead owner's lock
      // is taken over at once.
      post_event(static_cast<unsigned char>(console_closed | from_terminal));
      return TRUE;
    default: return FALSE;
  }
}

}  // namespace

void post_event(unsigned char event) {
  const std::lock_guard guard(queue_mutex);
  queue += static_cast<char>(event);
  ::SetEvent(queue_ready);
}

std::error_code install_signal_handlers(signal_setup&) {
  queue_ready = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);  // not inheritable
  if (queue_ready == nullptr) return {static_cast<int>(::GetLastError()), std::system_category()};
  if (!::SetConsoleCtrlHandler(on_console_event, TRUE))
    return {static_cast<int>(::GetLastError()), std::system_category()};
  return {};
}

void unblock_signals(const signal_setup&) {}

std::string next_events(int timeout_ms, std::span<watched> ready_on) {
  HANDLE handles[8] = {queue_ready};
  const std::size_t count = std::min<std::size_t>(ready_on.size(), std::size(handles) - 1);
  for (std::size_t k = 0; k < count; ++k) handles[k + 1] = ready_on[k].handle;
  const DWORD timeout = timeout_ms < 0 ? INFINITE : static_cast<DWORD>(timeout_ms);
  const DWORD woke = ::WaitForMultipleObjects(static_cast<DWORD>(count + 1), handles, FALSE, timeout);
  for (std::size_t k = 0; k < count; ++k)
    ready_on[k].revents = ::WaitForSingleObject(ready_on[k].handle, 0) == WAIT_OBJECT_0 ? 1 : 0;
  if (woke == WAIT_TIMEOUT || woke == WAIT_FAILED) return {};
  const std::lock_guard guard(queue_mutex);
  std::string events;
  events.swap(queue);
  ::ResetEvent(queue_ready);
  return events;
}

bool is_signal_event(unsigned char event) { return (event & ~from_terminal) < event_lease_lost; }
int signal_of(unsigned char event) { return event & ~from_terminal & 0xFF; }
// Every console event lockrun sees ends a wait for the lock.
bool is_forwarded(int) { return true; }

}  // namespace lockrun
