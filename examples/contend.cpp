// Two processes take one lock in turn, the way two copies of a cron job or
// a build step would, and show lock() waiting and waking on a release:
//
//   ./contend [LOCKFILE]        (default: /tmp/lockfile-demo.lock)
//
// The parent takes the lock, then forks. Each process takes the lock three
// times; whoever holds it keeps it until the other says (through a pipe)
// that it is waiting, then releases it and lets the other go first, so the
// lock alternates and the output is the same on every run.
#include <lockfile/lockfile.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace {

// One direction of the conversation: the other process's pipe ends.
struct channel {
  int send_fd;
  int receive_fd;

  void send(char c) const { (void)!::write(send_fd, &c, 1); }
  // The next byte, or '\0' once the other process has finished.
  char receive() const {
    char c = '\0';
    return ::read(receive_fd, &c, 1) == 1 ? c : '\0';
  }
};

void take_turns(lockfile::PIDLock& lock, const char* name, const char* other, const channel& peer,
                bool holding) {
  for (int round = 1; round <= 3; ++round) {
    if (holding || lock.try_lock()) {
      std::printf("%-6s got the lock at once\n", name);
    } else {
      const auto status = lock.inspect();
      std::printf("%-6s the %s (pid %d) holds it; waiting\n", name, other, status.lease ? status.lease->pid : 0);
      std::fflush(stdout);
      peer.send('w');  // "I am waiting"
      lock.lock();
      std::printf("%-6s got the lock after waiting\n", name);
      std::fflush(stdout);
      peer.send('g');  // "I have it"
    }
    holding = false;
    std::fflush(stdout);
    (void)peer.receive();  // the critical section: until the other waits (or has finished)
    lock.unlock();
    (void)peer.receive();  // and let it go first
  }
  ::close(peer.send_fd);  // "finished"
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "/tmp/lockfile-demo.lock";
  std::printf("two processes taking turns at %s\n", path);
  std::fflush(stdout);
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) return 1;

  lockfile::PIDLock lock(path);
  lock.acquire();  // before the fork: the parent goes first
  const pid_t child = ::fork();
  if (child < 0) return 1;
  if (child == 0) {
    // The child does not own the parent's lock; it takes its own.
    ::close(to_child[1]);
    ::close(to_parent[0]);
    lockfile::PIDLock own(path);
    take_turns(own, "child", "parent", {to_parent[1], to_child[0]}, false);
    return 0;
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  take_turns(lock, "parent", "child", {to_child[1], to_parent[0]}, true);
  int status = 0;
  ::waitpid(child, &status, 0);
  const auto after = lockfile::inspect(path);
  std::printf("done; the lock is %s\n", after.state == lockfile::LockState::free ? "free" : "still taken");
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
