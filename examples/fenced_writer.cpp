// A writer that fences its writes: it takes a lock with a fencing token and
// hands the token to the resource with every write, and the resource (here
// a small file store) rejects any write whose token is lower than one it has
// already accepted.
//
//   echo TEXT | ./fenced_writer LOCKFILE STORE_DIR [STALE_MS]
//
// It takes the lock (waiting for it), prints "token N", reads one line from
// stdin (the work that takes time; a pause can strike here), and writes it
// to STORE_DIR/log as "N TEXT". Exit status: 0 written, 3 rejected by the
// store (a later holder has written since: our lease had expired), 1 other
// failures.
//
// Why the store has to check: no lease can stop a holder that was paused
// (SIGSTOP, a VM freeze, a long GC) past its lease from running on. By the
// time it resumes, another process may have taken the lock over and
// written. Checking lock.held() first narrows that window but cannot close
// it: the pause can fall between the check and the write. The token closes
// it, because the check happens in the resource, atomically with the write.
//
// POSIX only: the store guards its check-and-write with flock(2) (the
// library's fencing tokens work on Windows too).
#include <lockfile/lockfile.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <system_error>

namespace {

// The resource: a directory holding "log" (the accepted writes) and
// "highest" (the highest token accepted so far). A real resource (a
// database, an object store) does the same with a conditional write:
// "accept only if token >= the highest seen".
class fenced_store {
 public:
  explicit fenced_store(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
  }

  enum class outcome { accepted, rejected };

  // Appends "token text" to the log unless a higher token was accepted
  // before; the same token again is accepted (one holder, several writes).
  outcome write(std::uint64_t token, const std::string& text) {
    const int highest_fd = open_or_throw(dir_ / "highest", O_RDWR | O_CREAT);
    // The store's own mutual exclusion for its check-and-write: short, held
    // by a process that is running, and released by the kernel if it dies.
    // It is not the lease: that one a paused process keeps believing in.
    if (::flock(highest_fd, LOCK_EX) != 0) fail("lock", dir_ / "highest", highest_fd);
    const auto highest = read_number(highest_fd);
    if (token < highest) {
      ::close(highest_fd);  // also releases the flock
      return outcome::rejected;
    }
    // The highest token first, then the data: a crash in between loses this
    // write but never lets a lower token in later. And the number is
    // written over the old one before the file is cut to its length (it
    // never gets shorter), so no crash leaves it empty, which would read 0.
    const std::string number = std::to_string(token);
    if (::pwrite(highest_fd, number.data(), number.size(), 0) != static_cast<ssize_t>(number.size()) ||
        ::ftruncate(highest_fd, static_cast<off_t>(number.size())) != 0)
      fail("write", dir_ / "highest", highest_fd);
    const int log_fd = open_or_throw(dir_ / "log", O_WRONLY | O_CREAT | O_APPEND);
    const std::string line = std::to_string(token) + " " + text + "\n";
    if (::write(log_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      ::close(log_fd);
      fail("append to", dir_ / "log", highest_fd);
    }
    ::close(log_fd);
    ::close(highest_fd);
    return outcome::accepted;
  }

 private:
  static int open_or_throw(const std::filesystem::path& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0) throw std::filesystem::filesystem_error("open", path, std::error_code(errno, std::generic_category()));
    return fd;
  }

  [[noreturn]] static void fail(const char* operation, const std::filesystem::path& path, int fd) {
    const std::error_code ec(errno, std::generic_category());
    ::close(fd);
    throw std::filesystem::filesystem_error(operation, path, ec);
  }

  static std::uint64_t read_number(int fd) {
    char text[32] = {};
    const auto n = ::pread(fd, text, sizeof text - 1, 0);
    std::uint64_t value = 0;
    if (n > 0) std::from_chars(text, text + n, value);
    return value;  // 0 for a new store
  }

  std::filesystem::path dir_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s LOCKFILE STORE_DIR [STALE_MS]   (the text to write on stdin)\n", argv[0]);
    return 1;
  }
  const auto stale = std::chrono::milliseconds(argc == 4 ? std::stoll(argv[3]) : 3000);
  try {
    lockfile::PIDLock lock(argv[1], {
        .lease_heartbeat_interval = std::max(std::chrono::milliseconds(1), stale / 10),
        .lease_stale_threshold = stale,
        .fencing = true,
    });
    lock.lock();
    const std::uint64_t token = lock.fencing_token();
    std::printf("token %llu\n", static_cast<unsigned long long>(token));
    std::fflush(stdout);

    std::string text;
    std::getline(std::cin, text);  // the slow part

    fenced_store store(argv[2]);
    if (store.write(token, text) == fenced_store::outcome::rejected) {
      std::fprintf(stderr, "rejected: the store has accepted a higher token than %llu (our lease %s)\n",
                   static_cast<unsigned long long>(token), lock.held() ? "looks held, but it expired" : "was lost");
      return 3;
    }
    std::printf("written with token %llu\n", static_cast<unsigned long long>(token));
    std::error_code ec;
    lock.release(ec);  // lost meanwhile: the write was still fenced, so it stands
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fenced_writer: %s\n", e.what());
    return 1;
  }
}
