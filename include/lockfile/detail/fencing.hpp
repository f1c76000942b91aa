// Fencing tokens: the generation names beside a lock file from which each
// acquisition with Options::fencing takes its token (DESIGN.md "Fencing tokens").
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_FENCING_HPP
#define LOCKFILE_DETAIL_FENCING_HPP

namespace lockfile::detail {

// Generation N of a lock file's tokens is the empty file ".<name>.fence.<N>"
// beside it (N decimal, from 1). A generation is only ever created
// exclusively; one whose creator found a higher one after creating it is
// removed again by that creator and never handed out; every other one is
// removed only by the creator of a higher one that it has handed out. So the
// highest token handed out so far always has its name present, until a
// higher one is handed out. (A read-then-write counter has no such floor: two
// writers read the same value. tests/model/fencing.pml shows both.)
//
// An acquisition takes its token after it has published its lock file:
//   1. list the generations; N = the highest + 1;
//   2. create generation N exclusively, durably (taken meanwhile: back to 1);
//   3. list again: a generation above N means the listing of step 1 was
//      stale and N may have been handed out and removed since: remove N and
//      go back to 1;
//   4. check that the lock path still names its own file;
//   5. write N into its record and hand it out;
//   6. remove the generations below N that step 3 listed.
// Step 3 keeps tokens unique where step 4 cannot: exclusive creation alone
// cannot tell a number never used from one used and removed (a creator
// paused between steps 1 and 2 found it free again; seen in
// tests/test_fencing.cpp, which creates without the lock). With an exact
// step 4 only one acquisition at a time gets from publishing to a passed
// check, and the highest token handed out keeps its name meanwhile, so step
// 1 alone goes higher (tests/model/fencing.pml: NO_RELIST holds with the
// lock, fails without it); but a network file system answering step 4 from
// a stale cache can let two pass, and then step 3 is the guard. Step 3
// relies on the listing showing the directory at one instant, which one
// batch of a directory read does on Linux (it holds the directory's lock,
// which creation and removal take); a directory too large for one batch, or
// a network file system's cached listing, can in theory miss a generation
// replaced during the read (docs/design.md "Fencing tokens").
// Step 4 comes after step 2 so that whoever takes the lock over later, even
// from a holder paused right after step 4, lists generation N and goes
// higher; checked first, a holder paused between the check and the creation
// could create a generation above its successor's.

inline std::filesystem::path::string_type generation_prefix(const std::filesystem::path& lock_file) {
  return protocol_name(lock_file, "fence.", "").filename().native();
}

inline std::filesystem::path generation_name(const std::filesystem::path& lock_file, std::uint64_t generation) {
  return protocol_name(lock_file, "fence.", std::to_string(generation));
}

// The generation a listed name's rest (after generation_prefix) spells:
// decimal digits without a leading zero, at least 1. 0: not a generation
// name (a user's ".<name>.fence.old" is not ours and is never touched).
inline std::uint64_t generation_of(std::basic_string_view<std::filesystem::path::value_type> rest) {
  if (rest.empty() || rest.size() > 20 || rest.front() == '0') return 0;
  std::uint64_t value = 0;
  for (const auto c : rest) {
    if (c < '0' || c > '9') return 0;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return 0;  // past 2^64 - 1
    value = value * 10 + digit;
  }
  return value;
}

struct generations {
  std::vector<std::uint64_t> present;  // in listing order
  std::uint64_t highest = 0;           // 0: none
};

inline std::error_code list_generations(const std::filesystem::path& lock_file, generations& out) {
  out = generations{};
  const auto prefix = generation_prefix(lock_file);
  std::vector<std::filesystem::path::string_type> names;
  if (auto ec = list_names(lock_file.parent_path(), prefix, names)) return ec;
  for (const auto& name : names) {
    const auto generation = generation_of(std::basic_string_view<std::filesystem::path::value_type>(name).substr(prefix.size()));
    if (generation == 0) continue;
    out.present.push_back(generation);
    out.highest = std::max(out.highest, generation);
  }
  return {};
}

struct new_generation {
  std::uint64_t token = 0;  // 0 when it failed
  std::vector<std::uint64_t> below;  // the generations step 3 listed below token
  std::error_code error;
  const char* operation = "";
  std::filesystem::path subject;  // the name the failure is about
};

enum class generation_claim {
  created,  // out.token is ours, unique, above every generation handed out
  taken,    // another creator had the number first
  stale,    // a higher generation appeared: the number was removed again
  failed,   // out.error
};

// Steps 2 and 3 for the generation above one listing (step 1), which may be
// stale by now. create_next_generation's one pass; the tests hand it a
// listing they made stale on purpose.
inline generation_claim claim_generation_above(const std::filesystem::path& lock_file, const generations& listed,
                                               mode_bits mode, new_generation& out) {
  const auto fail = [&](std::error_code ec, const char* operation, std::filesystem::path subject) {
    out.error = ec;
    out.operation = operation;
    out.subject = std::move(subject);
    return generation_claim::failed;
  };
  if (listed.highest == std::numeric_limits<std::uint64_t>::max())
    return fail(std::make_error_code(std::errc::value_too_large),
                "create fencing generation (the tokens of this lock are used up)",
                generation_name(lock_file, listed.highest));
  const auto next = listed.highest + 1;
  const auto name = generation_name(lock_file, next);
  if (const auto ec = create_durable_name(name, mode)) {
    if (ec == std::errc::file_exists) return generation_claim::taken;
    return fail(ec, "create fencing generation", name);
  }
  generations after;
  if (auto ec = list_generations(lock_file, after)) {
    (void)remove_name(name);  // not handed out: nobody else may count on it
    return fail(ec, "list fencing generations", lock_file.parent_path());
  }
  if (after.highest > next) {
    (void)remove_name(name);
    return generation_claim::stale;
  }
  out.token = next;
  out.below.clear();
  for (const auto generation : after.present)
    if (generation < next) out.below.push_back(generation);
  return generation_claim::created;
}

// A pause of up to bound microseconds, different in each process: two
// creators forked from one parent must not pause alike. Seeded once per
// thread and process, from the pid and the clock (std::random_device may
// throw, and a pause needs no entropy).
inline std::chrono::microseconds creator_pause(unsigned bound) {
  thread_local std::minstd_rand bits;  // NOLINT(cert-msc32-c,cert-msc51-cpp): seeded below before any use
  thread_local int seeded_for = 0;
  const int pid = self_identity().pid;
  if (seeded_for != pid) {
    const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    bits.seed(static_cast<std::minstd_rand::result_type>((now ^ (static_cast<std::uint64_t>(pid) << 20)) % 2147483646U + 1));
    seeded_for = pid;
  }
  return std::chrono::microseconds(bits() % bound);
}

// Steps 1 to 3: the next generation above every one handed out, created
// exclusively and made durable before it is returned.
inline new_generation create_next_generation(const std::filesystem::path& lock_file, mode_bits mode) {
  new_generation out;
  // Each pass that loses a number sees a higher highest: only holders (two,
  // when one of them is wrong) create, so a handful of passes is plenty; the
  // bound keeps a flood of foreign names from looping.
  constexpr int max_passes = 100;
  bool stale = false;  // a pass ended because a higher generation appeared
  for (int pass = 0; pass < max_passes; ++pass) {
    generations listed;
    if (auto ec = list_generations(lock_file, listed)) {
      out.error = ec;
      out.operation = "list fencing generations";
      out.subject = lock_file.parent_path();
      return out;
    }
    switch (claim_generation_above(lock_file, listed, mode, out)) {
      case generation_claim::created:
      case generation_claim::failed: return out;
      case generation_claim::taken: break;
      case generation_claim::stale: {
        // Creators that each see the other's higher number can knock each
        // other out in turn; a random pause, growing with the passes, lets
        // one finish first. Rare: it takes two believers.
        std::this_thread::sleep_for(creator_pause(20U << std::min(pass, 8)));
        stale = true;
        break;
      }
    }
  }
  out.error = std::make_error_code(std::errc::file_exists);
  out.operation = stale ? "create fencing generation (other creators kept going higher)"
                        : "create fencing generation (every number tried was taken first)";
  out.subject = lock_file.parent_path();
  return out;
}

// Step 6: the generations step 3 listed below the token, which no later
// acquisition needs (the token's own name bounds them all). Best effort: one
// left behind by a failure or a crash is removed by the next acquisition.
inline void remove_generations(const std::filesystem::path& lock_file, const std::vector<std::uint64_t>& below) {
  for (const auto generation : below) (void)remove_name(generation_name(lock_file, generation));
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_FENCING_HPP
