#include <lockfile/lockfile.hpp>
