// Many processes reclaim one stale file at the same moment: exactly one wins,
// every round, and nobody deletes the winner's fresh file.
#include "lockfile_catch.hpp"
#include "support.hpp"

using namespace lockfile_test;
using lockfile::PIDLock;

namespace {

struct report {
  char outcome;  // 'W' won, 'H' held, 'R' retry limit, 'E' error
  int pid;
};

}  // namespace

TEST_CASE("reclamation race: 8 processes on one stale file, exactly one winner per round") {
  constexpr int contenders = 8;
  constexpr int rounds = 40;
  temp_dir dir;
  const auto path = dir / "app.lock";
  for (int round = 0; round < rounds; ++round) {
    INFO("round " << round);
    write_file(path, foreign_record(std::chrono::system_clock::now() - 1h));
    pipe_pair start, results, done;
    std::vector<pid_t> pids;
    for (int i = 0; i < contenders; ++i) {
      pids.push_back(fork_child([&] {
        start.close_write();
        results.close_read();
        done.close_write();
        PIDLock lock(path);
        (void)start.receive();  // all go at once when the parent closes start
        std::error_code ec;
        lock.acquire(ec);
        report r{'E', static_cast<int>(::getpid())};
        if (!ec) r.outcome = 'W';
        else if (ec == lockfile::errc::lock_held) r.outcome = 'H';
        else if (ec == lockfile::errc::retry_limit_exceeded) r.outcome = 'R';
        (void)!::write(results.write_end, &r, sizeof r);  // atomic: below PIPE_BUF
        (void)done.receive();                              // hold until everyone reported
        if (lock.held()) lock.release();
        return 0;
      }));
    }
    start.close_read();
    results.close_write();
    done.close_read();
    start.close_write();  // go

    int winners = 0, errors = 0;
    int winner_pid = 0;
    for (int i = 0; i < contenders; ++i) {
      report r{};
      REQUIRE(::read(results.read_end, &r, sizeof r) == static_cast<ssize_t>(sizeof r));
      if (r.outcome == 'W') {
        ++winners;
        winner_pid = r.pid;
      }
      if (r.outcome == 'E') ++errors;
    }
    CHECK(winners == 1);
    CHECK(errors == 0);
    // The file on disk is the winner's: nobody removed it after the win.
    const auto lease = lockfile::parse_lease(read_file(path));
    REQUIRE(lease);
    CHECK(lease->pid == winner_pid);
    done.close_write();
    for (const pid_t pid : pids) CHECK(wait_exit(pid) == 0);
    CHECK(dir.entries().empty());
  }
}
