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

// A process that holds path until killed (SIGSTOP pauses it).
pid_t start_holder(const fs::path& path, lockfile::Options options, pipe_pair& ready) {
  const pid_t child = fork_child([&]() -> int {
    ready.close_read();
    PIDLock lock(path, options);
    lock.acquire();
    ready.send('H');
    for (;;) ::pause();
  });
  ready.close_write();
  if (ready.receive() != 'H') throw std::runtime_error("the holder did not take the lock");
  return child;
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
  CHECK_FALSE(readable(waiter.native_handle()));
  holder.unlock();
  // The directory event is queued by the removal itself: no delay.
  CHECK(readable(waiter.native_handle()));
  CHECK(waiter.try_lock());
  CHECK(lock.held());
}

TEST_CASE("lock_waiter: the descriptor is readable when a holder on this machine dies") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  pipe_pair ready;
  const pid_t child = start_holder(path, {.lease_stale_threshold = 60s}, ready);
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  REQUIRE_FALSE(waiter.try_lock());
  if (waiter.native_handle() < 0 || !linux_extras) {
    ::kill(child, SIGKILL);
    (void)wait_exit(child);
    WARN("no descriptor here (no epoll): the caller's timer at next_attempt() is the fallback");
    CHECK(eventually([&] { return waiter.try_lock(); }));
    return;
  }
  CHECK_FALSE(readable(waiter.native_handle()));
  ::kill(child, SIGKILL);
  (void)wait_exit(child);  // dead and reaped: its pidfd is readable now
  CHECK(readable(waiter.native_handle()));
  CHECK(waiter.try_lock());  // its lease had a minute left: taken over because it died
}

TEST_CASE("lock_waiter: a stopped holder's lease is waited out to the moment it turns stale") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  pipe_pair ready;
  const pid_t child =
      start_holder(path, {.lease_heartbeat_interval = 10ms, .lease_stale_threshold = 300ms}, ready);
  ::kill(child, SIGSTOP);
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
  ::kill(child, SIGKILL);
  (void)wait_exit(child);
}

TEST_CASE("lock_waiter: while a live holder keeps its lease the descriptor wakes only at poll periods") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  pipe_pair ready;
  const pid_t child = start_holder(path, {.lease_stale_threshold = 60s}, ready);
  PIDLock lock(path);
  lockfile::lock_waiter waiter(lock);
  REQUIRE_FALSE(waiter.try_lock());
  if (waiter.native_handle() < 0) {
    WARN("no descriptor here (no epoll): nothing to watch");
    ::kill(child, SIGKILL);
    (void)wait_exit(child);
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
  // 500 ms / at least 50 ms per poll period; a busy loop makes thousands.
  CHECK(wakes <= 11);
  CHECK(wakes >= 5);
  ::kill(child, SIGKILL);
  (void)wait_exit(child);
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
