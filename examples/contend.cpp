// Two processes contend for one lock, the way two copies of a cron job or a
// build step would. Run it and watch the lock pass from one to the other:
//
//   ./contend [LOCKFILE]        (default: /tmp/lockfile-demo.lock)
//
// Each process takes the lock three times with lock() (which waits), holds
// it for a moment of "work", and releases it through std::unique_lock.
#include <lockfile/lockfile.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;

namespace {

void worker(const char* path, const char* name) {
  lockfile::PIDLock lock(path);
  for (int round = 1; round <= 3; ++round) {
    if (lock.try_lock()) {
      std::printf("%-6s pid %d: got the lock at once\n", name, static_cast<int>(::getpid()));
    } else {
      const auto holder = lockfile::inspect(path);
      std::printf("%-6s pid %d: held by pid %d, waiting\n", name, static_cast<int>(::getpid()),
                  holder.lease ? holder.lease->pid : 0);
      std::fflush(stdout);
      lock.lock();
      std::printf("%-6s pid %d: got the lock after waiting\n", name, static_cast<int>(::getpid()));
    }
    std::fflush(stdout);
    std::unique_lock held(lock, std::adopt_lock);  // released at the end of the round
    std::this_thread::sleep_for(200ms);             // the critical section
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "/tmp/lockfile-demo.lock";
  std::printf("two processes contending for %s\n", path);
  std::fflush(stdout);
  const pid_t child = ::fork();
  if (child < 0) return 1;
  if (child == 0) {
    worker(path, "child");
    return 0;
  }
  worker(path, "parent");
  int status = 0;
  ::waitpid(child, &status, 0);
  const auto after = lockfile::inspect(path);
  std::printf("done; the lock is %s\n", after.state == lockfile::LockState::free ? "free" : "still taken");
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
