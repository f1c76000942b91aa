// The one Catch2 include for lockfile's tests. It works with Catch2 v2
// (single header, e.g. Debian 12's `catch2`) and Catch2 v3; the build
// defines LOCKFILE_CATCH2_MAJOR to 2 or 3 (tests/CMakeLists.txt).
//
// Everything Catch2 v2's catch.hpp offers (test and template-test macros,
// sections, generators, matchers, Approx) is available under both. Where
// the two versions spell a thing differently, use the names below:
//
//   lockfile_test::contains_substring("x")    v2 Contains / v3 ContainsSubstring
//   lockfile_test::starts_with, ends_with, equals_string, matches_regex
//   lockfile_test::message("what()")          exception message matcher
//   lockfile_test::Approx                     v2 ::Approx / v3 Catch::Approx
//   lockfile_test::case_sensitive::No         v2 CaseSensitive::Choice / v3 CaseSensitive
//   LOCKFILE_SKIP("reason")                   SKIP (Catch2 >= 3.3); else a warning, then return
//                                             (use at the test case's top level)
#ifndef LOCKFILE_TESTS_LOCKFILE_CATCH_HPP
#define LOCKFILE_TESTS_LOCKFILE_CATCH_HPP

#include <string>

#if !defined(LOCKFILE_CATCH2_MAJOR)
#error "LOCKFILE_CATCH2_MAJOR must be defined by the build (2 or 3)"
#elif LOCKFILE_CATCH2_MAJOR == 3
#include <catch2/catch_all.hpp>
#elif LOCKFILE_CATCH2_MAJOR == 2
#include <catch2/catch.hpp>
#else
#error "LOCKFILE_CATCH2_MAJOR must be 2 or 3"
#endif

namespace lockfile_test {

#if LOCKFILE_CATCH2_MAJOR == 3
using case_sensitive = Catch::CaseSensitive;
using Approx = Catch::Approx;

inline auto contains_substring(const std::string& s,
                               case_sensitive cs = case_sensitive::Yes) {
  return Catch::Matchers::ContainsSubstring(s, cs);
}
#else
using case_sensitive = Catch::CaseSensitive::Choice;
using Approx = Catch::Detail::Approx;

inline auto contains_substring(const std::string& s,
                               case_sensitive cs = Catch::CaseSensitive::Yes) {
  return Catch::Matchers::Contains(s, cs);
}
#endif

inline auto starts_with(const std::string& s,
                        case_sensitive cs = case_sensitive::Yes) {
  return Catch::Matchers::StartsWith(s, cs);
}
inline auto ends_with(const std::string& s,
                      case_sensitive cs = case_sensitive::Yes) {
  return Catch::Matchers::EndsWith(s, cs);
}
inline auto equals_string(const std::string& s,
                          case_sensitive cs = case_sensitive::Yes) {
  return Catch::Matchers::Equals(s, cs);
}
inline auto matches_regex(const std::string& re,
                          case_sensitive cs = case_sensitive::Yes) {
  return Catch::Matchers::Matches(re, cs);
}
// Matches an exception whose what() equals `s` exactly.
inline auto message(const std::string& s) { return Catch::Matchers::Message(s); }

}  // namespace lockfile_test

#if defined(SKIP)  // Catch2 >= 3.3
#define LOCKFILE_SKIP(...) SKIP(__VA_ARGS__)
#else
#define LOCKFILE_SKIP(...)                 \
  do {                                     \
    WARN("SKIPPED: " << __VA_ARGS__);      \
    return;                                \
  } while (false)
#endif

#endif  // LOCKFILE_TESTS_LOCKFILE_CATCH_HPP
