// Fencing tokens: the generation names beside a lock file from which each
// acquisition with Options::fencing takes its token (DESIGN.md "Fencing tokens").
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_FENCING_HPP
#define LOCKFILE_DETAIL_FENCING_HPP

namespace lockfile::detail {

// Generation N of a lock file's tokens is the empty file ".<name>.fence.<N>"
// beside it (N decimal, from 1). A generation is only ever created
// exclusively, and only removed by someone who created a higher one, so the
// highest generation present never goes down: every token handed out is
// bounded from above by a name that stays until a higher one exists.
// (A read-then-write counter has no such floor: two writers read the same
// value. tests/model/fencing.pml shows both.)
//
// An acquisition takes its token after it has published its lock file:
//   1. list the generations; N = the highest + 1;
//   2. create generation N exclusively, durably (taken meanwhile: back to 1);
//   3. check that the lock path still names its own file;
//   4. write N into its record and hand it out;
//   5. remove the generations below N.
// Step 3 comes after step 2 so that whoever takes the lock over later, even
// from a holder paused right after step 3, lists generation N and goes
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
  std::vector<std::uint64_t> below;  // the generations listed before token was created
  std::error_code error;
  const char* operation = "";
  std::filesystem::path subject;  // the name the failure is about
};

// Steps 1 and 2: the next generation above every one present, created
// exclusively and made durable before it is returned.
inline new_generation create_next_generation(const std::filesystem::path& lock_file, mode_bits mode) {
  new_generation out;
  // Each pass that loses a number to another creator sees a higher highest:
  // only holders (two, when one of them is wrong) create, so a handful of
  // passes is plenty; the bound keeps a flood of foreign names from looping.
  constexpr int max_passes = 100;
  for (int pass = 0; pass < max_passes; ++pass) {
    generations listed;
    if (auto ec = list_generations(lock_file, listed)) {
      out.error = ec;
      out.operation = "list fencing generations";
      out.subject = lock_file.parent_path();
      return out;
    }
    if (listed.highest == std::numeric_limits<std::uint64_t>::max()) {
      out.error = std::make_error_code(std::errc::value_too_large);
      out.operation = "create fencing generation (the tokens of this lock are used up)";
      out.subject = generation_name(lock_file, listed.highest);
      return out;
    }
    const auto next = listed.highest + 1;
    const auto name = generation_name(lock_file, next);
    const auto ec = create_durable_name(name, mode);
    if (!ec) {
      out.token = next;
      out.below = std::move(listed.present);
      return out;
    }
    if (ec != std::errc::file_exists) {
      out.error = ec;
      out.operation = "create fencing generation";
      out.subject = name;
      return out;
    }
  }
  out.error = std::make_error_code(std::errc::file_exists);
  out.operation = "create fencing generation (every number tried was taken first)";
  out.subject = lock_file.parent_path();
  return out;
}

// Step 5: the generations listed before token was created, which no later
// acquisition needs (token's own name bounds them all), from the listing
// step 1 made: no second listing. Best effort: one left behind by a failure
// or a crash is removed by the next acquisition.
inline void remove_generations(const std::filesystem::path& lock_file, const std::vector<std::uint64_t>& below) {
  for (const auto generation : below) (void)remove_name(generation_name(lock_file, generation));
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_FENCING_HPP
