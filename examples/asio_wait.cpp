// A server that keeps serving while it waits for a lock: its event loop
// (standalone asio) owns the wait through lockfile::lock_waiter, so no
// thread is blocked in lock().
//
//   ./asio_wait LOCKFILE
//
// It listens on 127.0.0.1 (an ephemeral port, printed), answers "pong" to
// every line a client sends, and meanwhile waits for LOCKFILE. Once it
// holds the lock it says so, does its exclusive work (here: nothing) and
// exits 0, releasing the lock.
//
// The waiter's descriptor (Linux: an epoll set) becomes readable when an
// attempt may succeed: the lock file was removed, its holder died, its lease
// turned stale, or a poll period passed. Where there is no descriptor
// (other systems: native_handle() < 0), the timer at next_attempt() alone
// drives the attempts, and a release is seen a poll period late at worst.
#include <lockfile/lockfile.hpp>

#include <asio.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

namespace {

// Drives a lock_waiter from an io_context: an attempt whenever its
// descriptor is readable or its next attempt is due, whichever comes first.
class asio_lock_wait {
 public:
  asio_lock_wait(asio::io_context& io, lockfile::PIDLock& lock, std::function<void()> on_acquired)
      : waiter_(lock), descriptor_(io), timer_(io), on_acquired_(std::move(on_acquired)) {
    // The stream_descriptor closes what it is given: give it a duplicate
    // (close-on-exec, as the library's own descriptors).
    if (waiter_.native_handle() >= 0) descriptor_.assign(::fcntl(waiter_.native_handle(), F_DUPFD_CLOEXEC, 0));
  }

  void start() { attempt(); }

 private:
  void attempt() {
    if (waiter_.try_lock()) {
      done_ = true;
      on_acquired_();
      return;
    }
    // Both waits lead to the next attempt; the one that completes second
    // (or is cancelled) belongs to an older round and does nothing.
    const unsigned round = ++round_;
    auto again = [this, round](const std::error_code& ec) {
      if (ec == asio::error::operation_aborted || round != round_ || done_) return;
      descriptor_.cancel();
      timer_.cancel();
      attempt();
    };
    if (descriptor_.is_open()) descriptor_.async_wait(asio::posix::descriptor_base::wait_read, again);
    timer_.expires_at(waiter_.next_attempt());
    timer_.async_wait(again);
    // asio watches descriptors edge-triggered: readiness that came between
    // the attempt and async_wait raises no new edge. Look once.
    pollfd ready{waiter_.native_handle(), POLLIN, 0};
    if (descriptor_.is_open() && ::poll(&ready, 1, 0) > 0)
      asio::post(descriptor_.get_executor(), [again] { again({}); });
  }

  lockfile::lock_waiter waiter_;
  asio::posix::stream_descriptor descriptor_;
  asio::steady_timer timer_;
  std::function<void()> on_acquired_;
  unsigned round_ = 0;
  bool done_ = false;
};

// One client: "pong" for every line it sends.
class session : public std::enable_shared_from_this<session> {
 public:
  session(asio::ip::tcp::socket socket, int& served) : socket_(std::move(socket)), served_(served) {}

  void start() { read_line(); }

 private:
  void read_line() {
    asio::async_read_until(socket_, input_, '\n', [self = shared_from_this()](std::error_code ec, std::size_t n) {
      if (ec) return;  // the client left
      self->input_.consume(n);
      ++self->served_;
      asio::async_write(self->socket_, asio::buffer(pong, sizeof pong - 1),
                        [self](std::error_code write_error, std::size_t) {
                          if (!write_error) self->read_line();
                        });
    });
  }

  static constexpr char pong[] = "pong\n";
  asio::ip::tcp::socket socket_;
  asio::streambuf input_;
  int& served_;
};

void accept(asio::ip::tcp::acceptor& acceptor, int& served) {
  acceptor.async_accept([&acceptor, &served](std::error_code ec, asio::ip::tcp::socket socket) {
    if (!ec) std::make_shared<session>(std::move(socket), served)->start();
    accept(acceptor, served);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s LOCKFILE\n", argv[0]);
    return 1;
  }
  try {
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    int served = 0;
    accept(acceptor, served);
    std::printf("serving on port %u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
    std::fflush(stdout);

    lockfile::PIDLock lock(argv[1]);
    asio_lock_wait wait(io, lock, [&] {
      std::printf("acquired the lock after serving %d requests\n", served);
      std::fflush(stdout);
      io.stop();  // the exclusive work would start here
    });
    std::printf("waiting for the lock\n");
    std::fflush(stdout);
    wait.start();
    io.run();
    return lock.held() ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_wait: %s\n", e.what());
    return 1;
  }
}
