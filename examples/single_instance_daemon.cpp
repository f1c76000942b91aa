// A daemon that must run as a single instance on this machine (or on every
// machine sharing the lock's directory).
//
//   ./single_instance_daemon [LOCKFILE]     (default: /tmp/single-instance-daemon.lock)
//
// A second copy exits at once with status 75 (EX_TEMPFAIL) and says who holds
// the lock. The daemon stops cleanly on SIGTERM or SIGINT, and also when it
// loses its lease (the file was deleted or replaced, or the process was
// paused past the stale threshold and another instance took over): then it
// must stop doing exclusive work at once.
#include <lockfile/lockfile.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>

using namespace std::chrono_literals;

namespace {

std::atomic<bool> stop_requested{false};

// The application owns its signal handlers; the library never installs any.
extern "C" void on_signal(int) { stop_requested.store(true); }

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "/tmp/single-instance-daemon.lock";

  struct sigaction action {};
  action.sa_handler = on_signal;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);

  std::atomic<bool> lease_lost{false};
  lockfile::PIDLock lock(path, {
      .lease_heartbeat_interval = 250ms,
      .lease_stale_threshold = 3s,
      // Runs on the library's notifier thread: keep it short, just flag it.
      .on_lease_lost = [&] { lease_lost.store(true); },
  });

  try {
    lock.acquire();
  } catch (const lockfile::lock_held_error& e) {
    std::fprintf(stderr, "another instance is running: %s\n", e.what());
    return 75;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "cannot take the lock: %s\n", e.what());
    return 1;
  }
  std::printf("pid %d: running as the only instance (lock %s)\n", static_cast<int>(::getpid()), path);
  std::fflush(stdout);

  // The main loop: a real daemon would serve requests here.
  while (!stop_requested.load() && !lease_lost.load()) std::this_thread::sleep_for(50ms);

  if (lease_lost.load()) {
    std::fprintf(stderr, "lease lost: another instance may be running; stopping\n");
    return 76;
  }
  lock.release();  // the destructor would too; explicit release reports errors
  std::printf("stopped cleanly\n");
  return 0;
}
