// lockfile::lock_waiter: a wait an event loop owns. Its descriptor sleeps
// while a holder lives and becomes readable on what would wake lock(): the
// release, the holder's exit, the moment its lease turns stale, the poll
// period. Without a descriptor (the portable lane), next_attempt() plans it.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

using namespace lockfile_test;
using lockfile::PIDLock;
using std::chrono::steady_clock;

namespace {

// Whether fd is readable within timeout_ms (0: right now).
bool readable(int fd, int timeout_ms = 0) {
  pollfd ready{fd, POLLIN, 0};
  int n = 0;
  do n = ::poll(&ready, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  return n == 1;
}

// A process that holds path until killed (SIGSTOP pauses it); killed when
// it goes out of scope, so that a failed check never leaves it running.
class holder_child {
 public:
  holder_child(const fs::path& path, lockfile::Options options) {
    pipe_pair ready;
    pid_ = fork_child([&]() -> int {
      ready.close_read();
      PIDLock lock(path, options);
      lock.acquire();
      ready.send('H');
      for (;;) ::pause();
    });
    ready.close_write();
    if (ready.receive() != 'H') throw std::runtime_error("the holder did not take the lock");
  }
  ~holder_child() { kill(SIGKILL); }
  holder_child(const holder_child&) = delete;
  holder_child& operator=(const holder_child&) = delete;

  // Sends sig; SIGKILL also waits until it is dead and reaped.
  void kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    if (sig != SIGKILL) return;
    (void)wait_exit(pid_);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// Not readable, where that can be told: before the planned time (after it,
// the timer may have fired, as it should).
void check_sleeping(const lockfile::lock_waiter& waiter) {
  if (steady_clock::now() + 5ms < waiter.next_attempt()) CHECK_FALSE(readable(waiter.native_handle()));
}

}  // namespace

TEST_CASE("lock_waiter: a free lock is acquired by the first attempt") {
  temp_dir dir;
  PIDLock lock(dir / "app.lock");
  lockfile::lock_waiter waiter(lock);
  CHECK(waiter.try_lock());
  CHECK(lock.held());
  CHECK(waiter.next_attempt() == steady_clock::time_point{});
}

TEST_CASE("lock_waiter: the descriptor sleeps while the holder lives and is readable at once after its release") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock holder(path);
  holder.acquire();
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  const auto before = steady_clock::now();
  REQUIRE_FALSE(waiter.try_lock());
  // Planned as lock() plans: at most a poll period (50 ms + 25 ms jitter).
  CHECK(waiter.next_attempt() > before);
  CHECK(waiter.next_attempt() <= steady_clock::now() + 75ms);
  if (waiter.native_handle() < 0) {
    WARN("no descriptor here (no epoll): the caller's timer at next_attempt() is the fallback");
    holder.unlock();
    CHECK(eventually([&] { return waiter.try_lock(); }));
    return;
  }
  check_sleeping(waiter);
  holder.unlock();
  // The directory event is queued by the removal itself: no delay.
  CHECK(readable(waiter.native_handle()));
  CHECK(waiter.try_lock());
  CHECK(lock.held());
}

TEST_CASE("lock_waiter: the descriptor is readable when a holder on this machine dies") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_child holder(path, {.lease_stale_threshold = 60s});
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  REQUIRE_FALSE(waiter.try_lock());
  if (waiter.native_handle() < 0) {
    // (And without the Linux extras no dead-owner probe either: the lease,
    // a minute long, would have to run out.)
    WARN("no descriptor here (no epoll): the caller's timer at next_attempt() is the fallback");
    CHECK(waiter.next_attempt() <= steady_clock::now() + 75ms);
    return;
  }
  check_sleeping(waiter);
  holder.kill(SIGKILL);  // dead and reaped: its pidfd is readable now
  CHECK(readable(waiter.native_handle()));
  CHECK(waiter.try_lock());  // its lease had a minute left: taken over because it died
}

TEST_CASE("lock_waiter: a stopped holder's lease is waited out to the moment it turns stale") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_child holder(path, {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 300ms});
  holder.kill(SIGSTOP);
  PIDLock lock(path, {.lease_stale_threshold = 300ms});
  lockfile::lock_waiter waiter(lock);
  const auto started = steady_clock::now();
  int attempts = 1;
  bool acquired = waiter.try_lock();
  while (!acquired && steady_clock::now() - started < 10s) {
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(waiter.next_attempt() - steady_clock::now());
    if (waiter.native_handle() >= 0)
      (void)readable(waiter.native_handle(), static_cast<int>(std::max<long long>(wait.count(), 0) + 1000));
    else
      std::this_thread::sleep_until(waiter.next_attempt());  // the portable fallback
    acquired = waiter.try_lock();
    ++attempts;
  }
  CHECK(acquired);
  // Poll periods (at least 50 ms) and the stale moment: no busy loop.
  CHECK(attempts <= 10);
}

TEST_CASE("lock_waiter: while a live holder keeps its lease the descriptor wakes only at poll periods") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  holder_child holder(path, {.lease_stale_threshold = 60s});
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  REQUIRE_FALSE(waiter.try_lock());
  if (waiter.native_handle() < 0) {
    WARN("no descriptor here (no epoll): nothing to watch");
    return;
  }
  const auto until = steady_clock::now() + 500ms;
  int wakes = 0;
  for (auto now = steady_clock::now(); now < until; now = steady_clock::now()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    if (!readable(waiter.native_handle(), static_cast<int>(left))) continue;
    ++wakes;
    CHECK_FALSE(waiter.try_lock());
  }
  // 500 ms / at least 50 ms per poll period; a busy loop makes thousands,
  // and a timer that never fires none (a slow sanitizer build fewer).
  CHECK(wakes <= 11);
  CHECK(wakes >= 2);
}

#if defined(LOCKFILE_ASIO_WAIT)
namespace {

// A client of examples/asio_wait: one line sent, one line back.
std::string ask(int port, const std::string& line) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(static_cast<std::uint16_t>(port));
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) == 0 &&
      ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
    char c = 0;
    while (::read(fd, &c, 1) == 1 && c != '\n') answer += c;
  }
  ::close(fd);
  return answer;
}

}  // namespace

TEST_CASE("asio_wait: the example serves requests while it waits for the lock and takes it at the release") {
  temp_dir dir;
  const auto path = dir / "server.lock";
  PIDLock holder(path);
  holder.acquire();
  program_process server({LOCKFILE_ASIO_WAIT, path.string()});
  const auto serving = server.line();
  REQUIRE_THAT(serving, starts_with("serving on port "));
  const int port = std::stoi(serving.substr(std::string("serving on port ").size()));
  REQUIRE(server.line() == "waiting for the lock");
  CHECK(ask(port, "ping\n") == "pong");
  CHECK(ask(port, "ping\n") == "pong");
  holder.unlock();
  CHECK(server.line() == "acquired the lock after serving 2 requests");
  std::string rest;
  CHECK(server.finish("", rest) == 0);
  CHECK(rest.empty());
  CHECK_FALSE(fs::exists(path));  // released at its exit
}
#endif

TEST_CASE("lock_waiter: a change to another name in the directory costs no attempt") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock holder(path);
  holder.acquire();
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  REQUIRE_FALSE(waiter.try_lock());
  if (waiter.native_handle() < 0) {
    WARN("no descriptor here (no epoll): nothing to watch");
    return;
  }
  const auto planned = waiter.next_attempt();
  write_file(dir / "other", "x");
  fs::remove(dir / "other");
  if (steady_clock::now() + 5ms >= planned) {
    WARN("too slow to tell an event from the planned time here");
    return;
  }
  CHECK(readable(waiter.native_handle()));  // the directory's event
  CHECK_FALSE(waiter.try_lock());
  CHECK(waiter.next_attempt() == planned);  // not attempted, so not planned again
  check_sleeping(waiter);                   // and asleep again
}

TEST_CASE("lock_waiter: in a forked child the waiter makes itself a new descriptor") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  PIDLock holder(path);
  holder.acquire();
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  REQUIRE_FALSE(waiter.try_lock());
  pipe_pair asked;
  const pid_t child = fork_child([&]() -> int {
    asked.close_read();
    if (waiter.try_lock()) return 2;  // the parent still holds it
    const bool has_descriptor = waiter.native_handle() >= 0;
    asked.send('R');  // now release it
    const auto deadline = steady_clock::now() + 10s;
    while (steady_clock::now() < deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(waiter.next_attempt() - steady_clock::now());
      if (has_descriptor) (void)readable(waiter.native_handle(), static_cast<int>(std::max<long long>(left.count(), 0)));
      else std::this_thread::sleep_until(waiter.next_attempt());
      if (waiter.try_lock()) return lock.held() ? 0 : 3;
    }
    return 4;
  });
  asked.close_write();
  REQUIRE(asked.receive() == 'R');
  holder.unlock();
  CHECK(wait_exit(child) == 0);
}
