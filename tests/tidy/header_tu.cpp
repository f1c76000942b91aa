// The translation unit through which tests/tidy/run.sh runs clang-tidy on
// the header (.clang-tidy at the repository root; HeaderFilterRegex limits
// the findings to include/lockfile/).
#include <lockfile/lockfile.hpp>
