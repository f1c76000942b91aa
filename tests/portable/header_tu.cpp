// Compiled by the portable_header_* tests (tests/CMakeLists.txt) with
// -DLOCKFILE_PORTABLE_POSIX -Wall -Wextra -Wpedantic -Werror -fsyntax-only,
// with g++ and with clang++, in every lane: the header's portable POSIX path
// (what macOS and the BSDs compile) must build without a warning, and the
// switch must turn the Linux extras off.
#include <lockfile/lockfile.hpp>

static_assert(!lockfile::detail::linux_extras, "LOCKFILE_PORTABLE_POSIX must turn the Linux extras off");

int main() { return 0; }
