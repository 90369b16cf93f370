/* LD_PRELOAD library for the fault matrix: an I/O error where the OS would
 * give one, for real programs (Python, TensorStore's C++ threads alike).
 *
 *   BIGML_FAULT_EIO=SUBSTRING     opening any path that contains SUBSTRING
 *                                 fails with EIO ("Input/output error").
 *   BIGML_FAULT_ENOSPC=SUBSTRING  opening such a path for writing fails
 *                                 with ENOSPC ("No space left on device"),
 *                                 a full disk where one cannot be mounted.
 *
 * Build: cc -shared -fPIC -O2 -o fault_injection.so fault_injection.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int matches(const char *variable, const char *path) {
  const char *pattern = getenv(variable);
  return pattern && *pattern && path && strstr(path, pattern);
}

/* The errno opening `path` with `flags` must fail with, or 0. */
static int fails(const char *path, int flags) {
  if (matches("BIGML_FAULT_EIO", path)) return EIO;
  if ((flags & (O_WRONLY | O_RDWR | O_CREAT)) &&
      matches("BIGML_FAULT_ENOSPC", path)) return ENOSPC;
  return 0;
}


static mode_t mode_of(int flags, va_list ap) {
  return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

int open(const char *path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t mode = mode_of(flags, ap); va_end(ap);
  int e = fails(path, flags); if (e) { errno = e; return -1; }
  int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
  return real(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t mode = mode_of(flags, ap); va_end(ap);
  int e = fails(path, flags); if (e) { errno = e; return -1; }
  int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open64");
  return real(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t mode = mode_of(flags, ap); va_end(ap);
  int e = fails(path, flags); if (e) { errno = e; return -1; }
  int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat");
  return real(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t mode = mode_of(flags, ap); va_end(ap);
  int e = fails(path, flags); if (e) { errno = e; return -1; }
  int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat64");
  return real(dirfd, path, flags, mode);
}
