// An LD_PRELOAD shim that makes a system without pidfds: syscall() answers
// pidfd_open and pidfd_send_signal with ENOSYS, as a kernel before 5.3
// does, and forwards everything else. lockrun --hold then watches its
// caller by polling, which is what its tests need to reach.
#include <dlfcn.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstdarg>

extern "C" long syscall(long number, ...) {
#if defined(SYS_pidfd_open)
  if (number == SYS_pidfd_open) {
    errno = ENOSYS;
    return -1;
  }
#endif
#if defined(SYS_pidfd_send_signal)
  if (number == SYS_pidfd_send_signal) {
    errno = ENOSYS;
    return -1;
  }
#endif
  // At most six arguments, each passed as a long (the kernel's ABI).
  va_list args;
  va_start(args, number);
  long a[6];
  for (long& value : a) value = va_arg(args, long);
  va_end(args);
  using syscall_fn = long (*)(long, ...);
  static const auto real = reinterpret_cast<syscall_fn>(::dlsym(RTLD_NEXT, "syscall"));
  return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
