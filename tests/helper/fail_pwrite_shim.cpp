// An LD_PRELOAD shim for fault-injection tests: while the file named by
// LOCKFILE_FAIL_PWRITE_WHILE exists, every pwrite() fails with EIO, as a
// dying disk or a stale NFS handle would make a lease renewal fail.
#include <dlfcn.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdlib>

namespace {

using pwrite_fn = ssize_t (*)(int, const void*, size_t, off_t);

bool failing() {
  const char* flag = std::getenv("LOCKFILE_FAIL_PWRITE_WHILE");
  struct stat st {};
  return flag != nullptr && ::stat(flag, &st) == 0;
}

ssize_t forward(const char* name, int fd, const void* buffer, size_t size, off_t offset) {
  if (failing()) {
    errno = EIO;
    return -1;
  }
  static const auto real = reinterpret_cast<pwrite_fn>(::dlsym(RTLD_NEXT, name));
  return real(fd, buffer, size, offset);
}

}  // namespace

extern "C" ssize_t pwrite(int fd, const void* buffer, size_t size, off_t offset) {
  return forward("pwrite", fd, buffer, size, offset);
}

extern "C" ssize_t pwrite64(int fd, const void* buffer, size_t size, off_t offset) {
  return forward("pwrite64", fd, buffer, size, offset);
}
