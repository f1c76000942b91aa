// Dead owners, the same-machine fast path (DESIGN.md "Dead owners",
// "Protocol" step 3, "Guarantees" 2): a lock whose owner provably died on this
// machine, in this PID namespace, is taken over at once instead of after the
// stale threshold; anything less than proof (another host, boot or PID
// namespace; a live pid with the right start time) waits for the lease rule.
//
// The holders are real processes: the helper binary (exec'd), forked children,
// a zombie, a process in its own PID namespace. Thresholds that the fast path
// must beat are long (60 s) and acquisition is bounded generously (5 s), so
// that no test depends on tight timing.
#include "lockfile_catch.hpp"
#include "support.hpp"

#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace lockfile_test;
using lockfile::Lease;
using lockfile::LockState;
using lockfile::Options;
using lockfile::PIDLock;

namespace {

using std::chrono::steady_clock;
using std::chrono::system_clock;

// A stale threshold the fast path must beat by far.
constexpr auto long_threshold = 60s;
// "Far sooner than the threshold", generously, for a loaded 2-core machine.
constexpr auto fast_bound = 5s;

Options slow() { return {.lease_heartbeat_interval = 250ms, .lease_stale_threshold = long_threshold}; }

// The portable POSIX path (no Linux extras) knows no same-machine identity:
// its records carry no boot id, PID namespace or start time, so no owner is
// ever proven dead and a crashed holder's lock is taken over once its lease
// is stale (DESIGN.md "Platforms"). Its holders use this short threshold, so
// that the takeover happens within the test.
constexpr auto portable_threshold = 1500ms;
Options portable() { return {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = portable_threshold}; }
// The threshold and options of a crashing holder in this lane.
constexpr auto lane_threshold = linux_extras ? std::chrono::milliseconds(long_threshold) : portable_threshold;
Options lane() { return linux_extras ? slow() : portable(); }

// A child that takes the lock and exits without releasing it: no release, no
// destructor, as if exit() skipped cleanup. Exits 2 if it could not take it.
pid_t crash_while_holding(const fs::path& path) {
  return fork_child([&]() -> int {
    PIDLock lock(path, lane());
    std::error_code ec;
    lock.acquire(ec);
    ::_exit(ec ? 2 : 0);
  });
}

// Waits for a child's exit without reaping it: it stays a zombie, and its
// pid and /proc entry (with the right start time) stay.
void wait_unreaped(pid_t child) {
  siginfo_t info{};
  int rc = 0;
  do rc = ::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT);
  while (rc != 0 && errno == EINTR);
  REQUIRE(rc == 0);
}

// --- what /proc says, read independently of the library ------------------

struct proc_facts {
  char state = '?';
  long ppid = 0;
  std::uint64_t start_time = 0;  // field 22, clock ticks since boot
};

// Fields are counted after the last ')' (the command name may hold anything).
std::optional<proc_facts> proc_facts_of(long pid) {
  const auto text = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream in(text.substr(close + 1));
  std::vector<std::string> fields;  // fields[0] is field 3
  for (std::string field; in >> field;) fields.push_back(field);
  if (fields.size() < 20) return std::nullopt;
  proc_facts facts;
  facts.state = fields[0].front();
  facts.ppid = std::stol(fields[1]);
  facts.start_time = std::stoull(fields[19]);
  return facts;
}

std::uint64_t start_time_of(long pid) {
  const auto facts = proc_facts_of(pid);
  if (!facts) throw std::runtime_error("no /proc/" + std::to_string(pid) + "/stat");
  return facts->start_time;
}

// Clock ticks since boot, the unit of /proc/PID/stat field 22.
std::uint64_t uptime_ticks() {
  std::istringstream in(read_file("/proc/uptime"));
  double seconds = 0;
  in >> seconds;
  return static_cast<std::uint64_t>(seconds * static_cast<double>(::sysconf(_SC_CLK_TCK)));
}

// Any process whose parent is parent (0 when none).
long child_of(long parent) {
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const auto name = it->path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(name);
    const auto facts = proc_facts_of(pid);
    if (facts && facts->ppid == parent) return pid;
  }
  return 0;
}

// A lease record with our boot id and PID namespace: one that the fast path
// judges by probing pid.
Lease same_space_record(int pid, std::uint64_t start_time) {
  Lease lease;
  lease.owner_id = "same-space-owner";
  lease.pid = pid;
  lease.heartbeat = system_clock::now();
  lease.host = "this-host";
  lease.boot_id = our_boot_id();
  lease.pid_namespace = our_pid_namespace();
  lease.start_time = start_time;
  lease.stale_threshold = long_threshold;
  return lease;
}

// The pid of a process that has exited and been reaped.
int dead_pid() {
  const pid_t pid = fork_child([] { return 0; });
  wait_exit(pid);
  return static_cast<int>(pid);
}

// A forked child that only waits (blocked on a pipe) until destroyed: a live
// process of our own PID namespace whose pid and start time are known.
class idle_process {
 public:
  idle_process() {
    pid_ = fork_child([this] {
      stop_.close_write();
      (void)stop_.receive();
      return 0;
    });
    stop_.close_read();
  }
  ~idle_process() {
    stop_.close_write();
    wait_exit(pid_);
  }
  idle_process(const idle_process&) = delete;
  idle_process& operator=(const idle_process&) = delete;
  int pid() const { return static_cast<int>(pid_); }

 private:
  pipe_pair stop_;
  pid_t pid_ = -1;
};

// An exec'd program (the helper binary, or unshare running it) with its stdin
// and stdout on pipes and its stderr in a file. Killed and reaped on
// destruction if still there.
class spawned_process {
 public:
  spawned_process(const std::vector<std::string>& args, const fs::path& stderr_file) {
    std::vector<char*> argv;
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    const std::string err = stderr_file.string();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (::dup2(stdin_.read_end, STDIN_FILENO) < 0 || ::dup2(stdout_.write_end, STDOUT_FILENO) < 0 ||
          err_fd < 0 || ::dup2(err_fd, STDERR_FILENO) < 0)
        ::_exit(126);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    stdin_.close_read();
    stdout_.close_write();
  }
  ~spawned_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
    }
  }
  spawned_process(const spawned_process&) = delete;
  spawned_process& operator=(const spawned_process&) = delete;

  pid_t pid() const { return pid_; }

  // One line of its stdout, without the newline; empty at end of file.
  std::string read_line() {
    std::string line;
    for (char c; (c = stdout_.receive()) != '\0' && c != '\n';) line.push_back(c);
    return line;
  }
  void close_stdin() { stdin_.close_write(); }
  void kill(int sig) const { ::kill(pid_, sig); }
  // Reaps it: its exit code, or 128 + signal.
  int wait() {
    const int code = wait_exit(pid_);
    pid_ = -1;
    return code;
  }

 private:
  pipe_pair stdin_;
  pipe_pair stdout_;
  pid_t pid_ = -1;
};

// The pid a helper announced with "held PID", or 0.
int held_pid(const std::string& line) {
  if (line.rfind("held ", 0) != 0) return 0;
  return std::atoi(line.c_str() + 5);
}

// The helper holding path with the given lease settings.
std::vector<std::string> hold_args(const fs::path& path, std::chrono::milliseconds stale,
                                   std::chrono::milliseconds heartbeat, const char* mode = "hold") {
  return {LOCKFILE_TEST_HELPER, mode, path.string(), std::to_string(stale.count()),
          std::to_string(heartbeat.count())};
}

Lease record_at(const fs::path& path) {
  const auto lease = lockfile::parse_lease(read_file(path));
  if (!lease) throw std::runtime_error("no valid record at " + path.string());
  return *lease;
}

// The portable path's recovery from a holder that died (crashed, or exited
// unreaped) with its lock: its record names no identity to probe, so the
// lock is held while the lease is young and taken over once it is stale,
// by a single try and by a waiting one, not before.
void check_taken_over_after_the_threshold(const fs::path& path) {
  const auto last = record_at(path);
  CHECK(last.boot_id.empty());
  CHECK(last.pid_namespace == 0);
  CHECK(last.start_time == 0);
  const auto since_heartbeat = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(system_clock::now() - last.heartbeat);
  };
  PIDLock lock(path, portable());
  if (since_heartbeat() < portable_threshold - 500ms) {
    CHECK(lockfile::inspect(path, portable()).state == LockState::held);
    CHECK_FALSE(lock.try_lock());  // the owner is dead, but nothing proves it
  } else {
    WARN("the machine was too slow to try well before the threshold; that check was left out");
  }
  REQUIRE(lock.try_lock_for(15s));
  INFO("taken over " << since_heartbeat().count() << " ms after the last heartbeat");
  CHECK(since_heartbeat() >= portable_threshold);
  CHECK(record_at(path).pid == ::getpid());
}

// A /proc/PID/stat line: pid, (comm), then fields 3 to 52 where field 22 is
// start_time and the others are small numbers.
std::string stat_line(const std::string& comm, char state, const std::string& start_time) {
  std::string text = "1234 (" + comm + ") " + state;
  for (int field = 4; field <= 52; ++field)
    text += " " + (field == 22 ? start_time : std::to_string(field * 3));
  return text + "\n";
}

// The same text with its parentheses blanked out.
std::string without_parentheses(std::string text) {
  for (auto& c : text)
    if (c == '(' || c == ')') c = ' ';
  return text;
}

}  // namespace

TEST_CASE("dead owner: a crashed daemon's lock is taken over at once, not after the stale threshold",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  spawned_process holder(hold_args(path, lane_threshold, 250ms), dir / "holder.err");
  const int pid = held_pid(holder.read_line());
  REQUIRE(pid == holder.pid());
  const auto record = record_at(path);
  CHECK(record.pid == pid);
  if (!linux_extras) {  // no identity, no proof of death: after the threshold
    holder.kill(SIGKILL);
    CHECK(holder.wait() == 128 + SIGKILL);
    check_taken_over_after_the_threshold(path);
    return;
  }
  // The identity that lets the fast path apply: our boot, our PID namespace.
  CHECK(record.boot_id == our_boot_id());
  CHECK(record.pid_namespace == our_pid_namespace());
  CHECK(record.start_time == start_time_of(pid));

  PIDLock lock(path, slow());
  CHECK_FALSE(lock.try_lock());  // alive: held

  SECTION("a single try after the crash") {
    holder.kill(SIGKILL);
    CHECK(holder.wait() == 128 + SIGKILL);
    CHECK(fs::exists(path));  // a crash leaves its file behind
    const auto start = steady_clock::now();
    CHECK(lock.try_lock());
    CHECK(steady_clock::now() - start < fast_bound);
  }
  SECTION("a contender waiting in try_lock_for when the holder crashes") {
    std::atomic<bool> waiting{false};
    bool acquired = false;
    steady_clock::time_point acquired_at;
    std::thread waiter([&] {
      waiting = true;
      acquired = lock.try_lock_for(30s);  // half the threshold: only the fast path gets there
      acquired_at = steady_clock::now();
    });
    REQUIRE(eventually([&] { return waiting.load(); }));
    const auto killed_at = steady_clock::now();
    holder.kill(SIGKILL);
    CHECK(holder.wait() == 128 + SIGKILL);
    waiter.join();
    REQUIRE(acquired);
    CHECK(acquired_at >= killed_at);
    CHECK(acquired_at - killed_at < fast_bound);
  }
  REQUIRE(lock.held());
  CHECK(record_at(path).pid == ::getpid());
}

TEST_CASE("dead owner: a process that exited without releasing does not block the next run",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  const pid_t child = crash_while_holding(path);
  REQUIRE(wait_exit(child) == 0);
  REQUIRE(fs::exists(path));
  const auto record = record_at(path);
  CHECK(record.pid == child);
  CHECK(system_clock::now() - record.heartbeat < lane_threshold);  // the lease is fresh
  if (!linux_extras) {
    check_taken_over_after_the_threshold(path);
    return;
  }

  CHECK(lockfile::inspect(path, slow()).state == LockState::stale);
  PIDLock lock(path, slow());
  const auto start = steady_clock::now();
  CHECK(lock.try_lock());
  CHECK(steady_clock::now() - start < fast_bound);
  CHECK(record_at(path).pid == ::getpid());
}

TEST_CASE("dead owner: a holder that exited but was not yet reaped (a zombie) is dead", "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  const pid_t child = crash_while_holding(path);
  wait_unreaped(child);
  const auto facts = proc_facts_of(child);
  REQUIRE(facts);
  CHECK(facts->state == 'Z');
  const auto record = record_at(path);
  CHECK(record.pid == child);
  if (!linux_extras) {  // a zombie is not seen: the lease rule
    check_taken_over_after_the_threshold(path);
    CHECK(wait_exit(child) == 0);
    return;
  }
  CHECK(record.start_time == facts->start_time);

  PIDLock lock(path, slow());
  CHECK(lock.try_lock());
  CHECK(record_at(path).pid == ::getpid());
  CHECK(wait_exit(child) == 0);  // reaped only now; it had acquired
}

TEST_CASE("dead owner: a record whose pid now belongs to another process is reclaimed at once, "
          "the true owner's is held",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  idle_process live;  // a live process of our PID namespace
  const auto start_time = start_time_of(live.pid());
  REQUIRE(start_time > 1);
  PIDLock lock(path, slow());

  SECTION("the right start time: the owner lives, the lock is held") {
    const auto bytes = lockfile::format_lease(same_space_record(live.pid(), start_time));
    write_file(path, bytes);
    CHECK_FALSE(lock.try_lock());
    CHECK(lockfile::inspect(path, slow()).state == LockState::held);
    CHECK(read_file(path) == bytes);
  }
  SECTION("an unknown start time (0) with a live pid: no proof of death, held") {
    const auto bytes = lockfile::format_lease(same_space_record(live.pid(), 0));
    write_file(path, bytes);
    CHECK_FALSE(lock.try_lock());
    CHECK(read_file(path) == bytes);
  }
  SECTION("a different start time: the pid was reused, the owner is dead") {
    for (const auto wrong : {start_time + 1, start_time - 1}) {
      INFO("recorded start time " << wrong << ", the live process's " << start_time);
      write_file(path, lockfile::format_lease(same_space_record(live.pid(), wrong)));
      if (!linux_extras) {
        // The portable path trusts no identity fields, not even Linux's own:
        // nothing is proven, the young lease holds.
        CHECK(lockfile::inspect(path, slow()).state == LockState::held);
        PIDLock contender(path, slow());
        CHECK_FALSE(contender.try_lock());
        continue;
      }
      CHECK(lockfile::inspect(path, slow()).state == LockState::stale);
      PIDLock contender(path, slow());
      CHECK(contender.try_lock());
      CHECK(record_at(path).pid == ::getpid());
    }
  }
}

TEST_CASE("dead owner: a holder in another PID namespace is judged by its lease, not by our /proc",
          "[dead-owner]") {
  temp_dir dir;
  {
    // Is an unprivileged (or container) PID namespace with its own /proc allowed here?
    spawned_process probe({"unshare", "--pid", "--fork", "--mount", "--mount-proc", "true"},
                          dir / "probe.err");
    const int code = probe.wait();
    if (code != 0) {
      const auto why = read_file(dir / "probe.err");
      LOCKFILE_SKIP("a PID namespace with its own /proc cannot be made here: 'unshare --pid --fork "
                    "--mount --mount-proc true' exited "
                    << code << (code == 127 ? " (unshare not installed?)" : "") << ": " << why);
    }
  }
  const auto path = dir / "app.lock";
  constexpr auto threshold = 1500ms;
  // --kill-child: should the test fail before the kill below, the helper dies with unshare.
  auto args = hold_args(path, threshold, 100ms);
  args.insert(args.begin(), {"unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"});
  spawned_process unshare(args, dir / "unshare.err");
  const auto line = unshare.read_line();
  INFO("helper said '" << line << "', stderr: " << read_file(dir / "unshare.err"));
  const int inner_pid = held_pid(line);  // its pid inside its namespace (1)
  REQUIRE(inner_pid > 0);
  const long host_pid = child_of(unshare.pid());
  REQUIRE(host_pid > 0);
  REQUIRE(host_pid != inner_pid);

  const auto record = record_at(path);
  CHECK(record.pid == inner_pid);
  if (linux_extras) {
    CHECK(record.boot_id == our_boot_id());  // same machine, same boot ...
    REQUIRE(record.pid_namespace != 0);
    REQUIRE(record.pid_namespace != our_pid_namespace());  // ... another PID space
  } else {
    CHECK(record.boot_id.empty());  // the portable path writes no identity at all
    CHECK(record.pid_namespace == 0);
  }

  // Killing pid 1 of a namespace kills everything in it; unshare then exits.
  REQUIRE(::kill(static_cast<pid_t>(host_pid), SIGKILL) == 0);
  unshare.wait();
  CHECK(::kill(static_cast<pid_t>(host_pid), 0) != 0);  // gone (unshare reaped it)
  const auto last = record_at(path);
  const auto since_heartbeat = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(system_clock::now() - last.heartbeat);
  };
  INFO("last heartbeat " << since_heartbeat().count() << " ms before the kill was confirmed");

  // Its pid means nothing in our namespace: not reclaimed at once. (A lock
  // with a long threshold of its own: this check does not race the lease.)
  PIDLock patient(path, slow());
  CHECK_FALSE(patient.try_lock());
  CHECK(lockfile::inspect(path, slow()).state == LockState::held);

  PIDLock lock(path, {.lease_heartbeat_interval = 100ms, .lease_stale_threshold = threshold});
  if (since_heartbeat() < threshold - 500ms) {
    CHECK_FALSE(lock.try_lock());  // an immediate try, well before the threshold
  } else {
    WARN("the machine was too slow to try well before the threshold; that check was left out");
  }
  REQUIRE(lock.try_lock_for(15s));
  CHECK(since_heartbeat() >= threshold);  // not before the threshold
  CHECK(record_at(path).pid == ::getpid());
}

TEST_CASE("dead owner: process_appears_alive replaces the probe for records of our own PID space",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  std::atomic<int> calls{0};
  std::atomic<int> asked_pid{0};
  auto override_saying = [&](bool alive) {
    Options options = slow();
    options.process_appears_alive = [&calls, &asked_pid, alive](int pid) {
      ++calls;
      asked_pid = pid;
      return alive;
    };
    return options;
  };

  SECTION("it says alive: a crashed holder's lock stays held until its lease runs out") {
    spawned_process holder(hold_args(path, long_threshold, 250ms), dir / "holder.err");
    const int pid = held_pid(holder.read_line());
    REQUIRE(pid == holder.pid());
    holder.kill(SIGKILL);
    holder.wait();
    const auto bytes = read_file(path);

    PIDLock lock(path, override_saying(true));
    CHECK_FALSE(lock.try_lock());
    CHECK(lockfile::inspect(path, override_saying(true)).state == LockState::held);
    CHECK(read_file(path) == bytes);
    if (!linux_extras) {
      // The portable path's records carry no identity: the override is
      // never asked, and without it nothing proves the death either.
      CHECK(calls.load() == 0);
      CHECK(lockfile::inspect(path, slow()).state == LockState::held);
      return;
    }
    CHECK(calls.load() >= 1);
    CHECK(asked_pid.load() == pid);
    // Without the override the probe finds it dead: the override made the difference.
    CHECK(lockfile::inspect(path, slow()).state == LockState::stale);
  }
  SECTION("it says dead: a live holder's lock is taken over at once") {
    holder_process holder(path, slow());
    REQUIRE(holder.acquired());
    CHECK(lockfile::inspect(path, slow()).state == LockState::held);  // the probe: alive

    PIDLock lock(path, override_saying(false));
    if (!linux_extras) {  // never asked, so its "dead" takes nothing: held
      CHECK_FALSE(lock.try_lock());
      CHECK(calls.load() == 0);
      CHECK(holder.finish() == 0);
      return;
    }
    CHECK(lock.try_lock());
    CHECK(calls.load() >= 1);
    CHECK(asked_pid.load() == holder.pid());
    CHECK(holder.finish() == 0);
    CHECK(record_at(path).pid == ::getpid());  // the old holder's release left our file alone
  }
}

TEST_CASE("dead owner: process_appears_alive is never asked about records from another host, boot or "
          "PID namespace",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  // A dead pid: were the fast path applied, the probe would find it dead too.
  Lease lease = same_space_record(dead_pid(), 12345);
  const int kind = GENERATE(0, 1, 2, 3, 4);
  switch (kind) {
    case 0:  // a record without identity (the Go package, an old version)
      lease.host.clear();
      lease.boot_id.clear();
      lease.pid_namespace = 0;
      lease.start_time = 0;
      break;
    case 1: lease.boot_id = "another-boot-0000-0000-000000000000"; break;   // another host or boot
    case 2: lease.pid_namespace = our_pid_namespace() + 1; break;           // another container
    case 3: lease.pid_namespace = 0; break;                                 // namespace unknown
    case 4: lease.boot_id.clear(); break;                                   // boot unknown
    default: break;
  }
  INFO("record kind " << kind);
  const auto bytes = lockfile::format_lease(lease);
  write_file(path, bytes);

  std::atomic<int> calls{0};
  Options options = slow();
  options.process_appears_alive = [&calls](int) {
    ++calls;
    return false;  // "dead": would make the lock stale at once if asked
  };
  PIDLock lock(path, options);
  CHECK_FALSE(lock.try_lock());
  CHECK(lockfile::inspect(path, options).state == LockState::held);
  CHECK(lockfile::inspect(path, slow()).state == LockState::held);  // nor does the probe apply
  CHECK(calls.load() == 0);
  CHECK(read_file(path) == bytes);

  // The same record in our own PID space: now it is asked, and believed.
  // (The portable path knows no PID space of its own: still never asked.)
  write_file(path, lockfile::format_lease(same_space_record(lease.pid, 12345)));
  if (!linux_extras) {
    CHECK_FALSE(lock.try_lock());
    CHECK(calls.load() == 0);
    return;
  }
  CHECK(lock.try_lock());
  CHECK(calls.load() >= 1);
}

TEST_CASE("dead owner: inspect() reports a crashed owner's lock as stale, and changes nothing",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  spawned_process holder(hold_args(path, lane_threshold, 250ms), dir / "holder.err");
  const int pid = held_pid(holder.read_line());
  REQUIRE(pid == holder.pid());
  PIDLock observer(path, lane());
  CHECK(lockfile::inspect(path, lane()).state == LockState::held);
  CHECK(observer.inspect().state == LockState::held);

  holder.kill(SIGKILL);
  holder.wait();
  const auto bytes = read_file(path);
  if (!linux_extras) {
    // No proof of death: stale only once the lease is, and still untouched.
    const auto heartbeat = record_at(path).heartbeat;
    REQUIRE(eventually([&] { return lockfile::inspect(path, lane()).state == LockState::stale; }, 15s));
    CHECK(system_clock::now() - heartbeat >= portable_threshold);
    CHECK(observer.inspect().state == LockState::stale);
    CHECK(read_file(path) == bytes);
    CHECK_FALSE(observer.held());
    return;
  }
  const auto status = lockfile::inspect(path, slow());
  CHECK(status.state == LockState::stale);
  REQUIRE(status.lease);
  CHECK(status.lease->pid == pid);
  CHECK(status.age < long_threshold);  // stale although the lease is young
  CHECK(observer.inspect().state == LockState::stale);
  CHECK(read_file(path) == bytes);  // inspect removed nothing
  CHECK_FALSE(observer.held());
}

TEST_CASE("dead owner: a lock taken in a forked worker names the worker, so the worker's crash frees it",
          "[dead-owner]") {
  temp_dir dir;
  // The parent has written its own identity first (it is cached per process).
  PIDLock parent_lock(dir / "parent.lock", slow());
  parent_lock.acquire();
  const auto parent_start = start_time_of(::getpid());
  CHECK(record_at(dir / "parent.lock").start_time == (linux_extras ? parent_start : 0));
  // A child forked now starts at least a tick later than the parent did.
  REQUIRE(eventually([&] { return uptime_ticks() > parent_start + 1; }));

  const auto path = dir / "worker.lock";
  pipe_pair ready, finish;
  const pid_t child = fork_child([&] {
    ready.close_read();
    finish.close_write();
    PIDLock lock(path, slow());
    std::error_code ec;
    lock.acquire(ec);
    ready.send(ec ? 'F' : 'H');
    (void)finish.receive();
    return 0;
  });
  ready.close_write();
  finish.close_read();
  REQUIRE(ready.receive() == 'H');

  const auto record = record_at(path);
  const auto child_start = start_time_of(child);
  REQUIRE(child_start != parent_start);
  CHECK(record.pid == child);  // the worker, not its parent, in both lanes
  if (!linux_extras) {
    // The portable path: no identity to probe, so the worker's crash frees
    // the lock only once its lease is stale (60 s here): still held.
    CHECK(record.start_time == 0);
    CHECK(record.boot_id.empty());
    PIDLock lock(path, slow());
    CHECK_FALSE(lock.try_lock());
    ::kill(child, SIGKILL);
    CHECK(wait_exit(child) == 128 + SIGKILL);
    CHECK_FALSE(lock.try_lock());
    return;
  }
  CHECK(record.start_time == child_start);
  CHECK(record.pid_namespace == our_pid_namespace());
  CHECK(record.boot_id == our_boot_id());

  PIDLock lock(path, slow());
  CHECK_FALSE(lock.try_lock());  // the worker lives
  ::kill(child, SIGKILL);
  CHECK(wait_exit(child) == 128 + SIGKILL);
  CHECK(lock.try_lock());  // at once, though its parent (this process) lives on
}

TEST_CASE("dead owner: a holder whose name holds spaces and parentheses is still judged alive",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  pipe_pair ready, finish;
  const pid_t child = fork_child([&] {
    ready.close_read();
    finish.close_write();
    // A name that, cut at its first ')', reads as a zombie.
    if (::prctl(PR_SET_NAME, "x) Z 1 (y", 0, 0, 0) != 0) return 3;
    PIDLock lock(path, slow());
    std::error_code ec;
    lock.acquire(ec);
    ready.send(ec ? 'F' : 'H');
    (void)finish.receive();
    lock.release(ec);
    return ec ? 4 : 0;
  });
  ready.close_write();
  finish.close_read();
  REQUIRE(ready.receive() == 'H');
  const auto stat_text = read_file("/proc/" + std::to_string(child) + "/stat");
  REQUIRE(stat_text.find("(x) Z 1 (y)") != std::string::npos);

  // (The portable path writes no start time, and reads no /proc: held anyway.)
  CHECK(record_at(path).start_time == (linux_extras ? start_time_of(child) : 0));
  PIDLock lock(path, slow());
  CHECK_FALSE(lock.try_lock());
  CHECK(lockfile::inspect(path, slow()).state == LockState::held);
  finish.close_write();
  CHECK(wait_exit(child) == 0);
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("dead owner: parse_proc_stat counts fields after the last parenthesis and rejects malformed text",
          "[dead-owner]") {
  using lockfile::detail::parse_proc_stat;

  SECTION("a command name with spaces and parentheses") {
    const auto parsed = parse_proc_stat(stat_line("a) b (c)", 'S', "987654321"));
    REQUIRE(parsed);
    CHECK(parsed->state == 'S');
    CHECK(parsed->start_time == 987654321u);
  }
  SECTION("a command name that looks like a whole stat line") {
    const auto parsed =
        parse_proc_stat(stat_line("x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21", 'R', "42"));
    REQUIRE(parsed);
    CHECK(parsed->state == 'R');
    CHECK(parsed->start_time == 42u);
  }
  SECTION("the brief's example: 1234 (a) b (c)) S 1 ...") {
    std::string text = "1234 (a) b (c)) S 1";
    for (int field = 5; field <= 21; ++field) text += " 0";
    text += " 5555 7 8 9\n";  // field 22, then more
    const auto parsed = parse_proc_stat(text);
    REQUIRE(parsed);
    CHECK(parsed->state == 'S');
    CHECK(parsed->start_time == 5555u);
  }
  SECTION("exactly 22 fields") {
    std::string text = "7 (z) D";
    for (int field = 4; field <= 21; ++field) text += " 1";
    text += " 31337";
    const auto parsed = parse_proc_stat(text);
    REQUIRE(parsed);
    CHECK(parsed->state == 'D');
    CHECK(parsed->start_time == 31337u);
  }
  SECTION("this process's own /proc entry agrees with an independent reading") {
    const auto parsed = parse_proc_stat(read_file("/proc/self/stat"));
    REQUIRE(parsed);
    CHECK(parsed->start_time == start_time_of(::getpid()));
  }
  SECTION("malformed text is rejected") {
    std::string too_short = "1234 (a) S";
    for (int field = 4; field <= 21; ++field) too_short += " 1";  // field 22 missing
    const std::string text = GENERATE_COPY(
        std::string(), std::string("1234"), std::string("1234 (a"), std::string("1234 (a)"),
        std::string("1234 (a) S 1 2 3\n"), too_short, too_short + " ", too_short + "\n",
        without_parentheses(stat_line("a", 'S', "5")),
        stat_line("a", 'S', "12x"), stat_line("a", 'S', "-5"), stat_line("a", 'S', "+5"),
        stat_line("a", 'S', "0x10"), stat_line("a", 'S', "99999999999999999999999"),
        stat_line("a", 'S', "1.5"));
    INFO("text: " << text);
    CHECK_FALSE(parse_proc_stat(text));
  }
}

// A program whose main thread ends with pthread_exit() lives on in its other
// threads (the heartbeat among them), but /proc/PID/stat shows its
// thread-group leader as 'Z'. That is no proof of death.
TEST_CASE("dead owner: a holder whose main thread ended with pthread_exit is alive, not a zombie",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  spawned_process holder(hold_args(path, long_threshold, 100ms, "hold-main-exits"), dir / "holder.err");
  const int pid = held_pid(holder.read_line());
  REQUIRE(pid == holder.pid());
  REQUIRE(eventually([&] {
    const auto facts = proc_facts_of(pid);
    return facts && facts->state == 'Z';
  }));
  // Still renewing: the process is alive.
  const auto before = read_file(path);
  REQUIRE(eventually([&] { return read_file(path) != before; }));

  PIDLock lock(path, slow());
  CHECK_FALSE(lock.try_lock());
  CHECK(lockfile::inspect(path, slow()).state == LockState::held);
  holder.close_stdin();
  CHECK(holder.wait() == 0);
  CHECK_FALSE(fs::exists(path));
}

// Regression: an override that calls an exited but unreaped holder alive (kill(pid, 0)
// succeeds on a zombie) keeps its lock held until the lease runs out; a
// waiting lock must keep to its poll period meanwhile, not retry in a loop
// (a zombie's pidfd is readable at once, every time it is opened).
TEST_CASE("dead owner: a lock waiting on a holder that the override calls alive polls, it does not spin",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  const pid_t child = crash_while_holding(path);
  wait_unreaped(child);

  std::atomic<int> calls{0};
  Options options = slow();
  options.process_appears_alive = [&calls](int) {
    ++calls;
    return true;
  };
  PIDLock lock(path, options);
  CHECK_FALSE(lock.try_lock_for(1s));
  INFO(calls.load() << " attempts in one second");
  if (linux_extras) {
    CHECK(calls.load() >= 1);
    CHECK(calls.load() < 500);  // a poll period of tens of milliseconds: about 40
  } else {
    CHECK(calls.load() == 0);  // the portable path has no identity to ask about, and no pidfd
  }
  CHECK(wait_exit(child) == 0);
}

namespace {

// Runs body in a child whose /proc is an empty tmpfs (a private mount
// namespace): the probe must then fall back to kill(pid, 0). 77 when this
// machine does not let us mount.
int with_proc_hidden(const std::function<int()>& body) {
  return wait_exit(fork_child([&] {
    if (::unshare(CLONE_NEWNS) != 0) return 77;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
    if (::mount("tmpfs", "/proc", "tmpfs", 0, "size=4k") != 0) return 77;
    return body();
  }));
}

}  // namespace

TEST_CASE("dead owner: when /proc/PID cannot be read (hidepid), only kill(pid, 0) proves death", "[dead-owner]") {
  if (!linux_extras)
    LOCKFILE_SKIP("portable POSIX path: no /proc probe and no same-machine identity, so there is no probe to "
                  "fall back from; its lease-only recovery is checked by the crashed-daemon cases");
  // The identity (boot id, PID namespace) was read while /proc was visible,
  // as under hidepid, which hides only other users' processes.
  temp_dir dir;
  const auto path = dir / "app.lock";
  SECTION("a holder that is gone (ESRCH) is taken over at once") {
    const pid_t crashed = crash_while_holding(path);
    REQUIRE(wait_exit(crashed) == 0);  // reaped: kill() now says ESRCH
    (void)lockfile::inspect(path, slow());  // our identity, read with /proc visible
    const int code = with_proc_hidden([&] {
      if (fs::exists("/proc/self")) return 3;
      PIDLock lock(path, slow());
      return lock.try_lock() ? 0 : 1;
    });
    if (code == 77) LOCKFILE_SKIP("cannot mount over /proc here (needs root and a mount namespace)");
    CHECK(code == 0);
  }
  SECTION("a live holder stays held") {
    holder_process holder(path, slow());
    REQUIRE(holder.acquired());
    (void)lockfile::inspect(path, slow());
    const int code = with_proc_hidden([&] {
      PIDLock lock(path, slow());
      return lock.try_lock() ? 1 : 0;
    });
    if (code == 77) LOCKFILE_SKIP("cannot mount over /proc here (needs root and a mount namespace)");
    CHECK(code == 0);
    CHECK(holder.finish() == 0);
  }
}

TEST_CASE("dead owner: a process that cannot read /proc at all knows no identity, so only the lease decides",
          "[dead-owner]") {
  temp_dir dir;
  const auto path = dir / "app.lock";
  const pid_t crashed = crash_while_holding(path);
  REQUIRE(wait_exit(crashed) == 0);
  const int code = with_proc_hidden([&] {
    // A fresh process image, which reads its identity now, with /proc hidden.
    const std::string stale = std::to_string(std::chrono::milliseconds(long_threshold).count());
    const pid_t inner = ::fork();
    if (inner == 0) {
      ::execl(LOCKFILE_TEST_HELPER, LOCKFILE_TEST_HELPER, "try", path.c_str(), stale.c_str(), "250",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return wait_exit(inner);
  });
  if (code == 77) LOCKFILE_SKIP("cannot mount over /proc here (needs root and a mount namespace)");
  CHECK(code == 1);  // held: the crashed holder's 60 s lease, no fast path
}
