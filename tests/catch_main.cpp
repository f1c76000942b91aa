// Catch2's main() for Catch2 v2, compiled once into the lockfile_catch2
// static library (tests/CMakeLists.txt). With Catch2 v3 the tests link
// Catch2::Catch2WithMain instead and this file is not compiled.
#if !defined(LOCKFILE_CATCH2_MAJOR)
#error "LOCKFILE_CATCH2_MAJOR must be defined by the build (2 or 3)"
#elif LOCKFILE_CATCH2_MAJOR == 2
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
