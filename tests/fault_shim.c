/* Storage faults injected below Python and tensorstore alike, as an LD_PRELOAD library.
 *
 * Fails the first SCORE_SDE_FAULT_COUNT (default 1; -1: every) calls of one kind on paths that
 * contain SCORE_SDE_FAULT_PATTERN with errno SCORE_SDE_FAULT_ERRNO (default EIO):
 *   SCORE_SDE_FAULT_OP=open   open / open64 / openat / openat64 of a matching path fail;
 *   SCORE_SDE_FAULT_OP=read   read / pread / readv / preadv on a descriptor opened on one fail;
 *   SCORE_SDE_FAULT_OP=write  write / pwrite / writev / pwritev on such a descriptor fail.
 * Each injected fault appends one line ('<op> <path>') to SCORE_SDE_FAULT_LOG, if set, so that a
 * test can check that the fault reached the code under test.
 *
 * Built by tests/test_storage_faults.py: gcc -shared -fPIC -O1 -o fault_shim.so fault_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
#define MAX_PATH 1024

static char watched[MAX_FDS];      /* 1 where the descriptor was opened on a matching path. */
static char paths[MAX_FDS][96];    /* Tail of that path, for the log. */
static long remaining = -2;        /* Faults left to inject; -1: unlimited; -2: not read yet. */

static const char *env(const char *name) {
  const char *value = getenv(name);
  return value ? value : "";
}

static int wants(const char *op) { return strcmp(env("SCORE_SDE_FAULT_OP"), op) == 0; }

static int matches(const char *path) {
  const char *pattern = env("SCORE_SDE_FAULT_PATTERN");
  return path && pattern[0] && strstr(path, pattern) != NULL;
}

static void log_fault(const char *op, const char *path) {
  const char *log = env("SCORE_SDE_FAULT_LOG");
  if (!log[0]) return;
  /* Raw system calls: the wrapped write() must not see its own log. */
  int fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  char line[MAX_PATH + 16];
  size_t n = 0, k = strlen(op), m = strlen(path);
  if (m > MAX_PATH) m = MAX_PATH;
  memcpy(line, op, k); n += k;
  line[n++] = ' ';
  memcpy(line + n, path, m); n += m;
  line[n++] = '\n';
  syscall(SYS_write, fd, line, n);
  syscall(SYS_close, fd);
}

/* Whether to fail this call (and take one fault from the budget). */
static int take_fault(void) {
  long left = __atomic_load_n(&remaining, __ATOMIC_SEQ_CST);
  if (left == -2) {
    const char *count = env("SCORE_SDE_FAULT_COUNT");
    long initial = count[0] ? strtol(count, NULL, 10) : 1;
    long expected = -2;
    __atomic_compare_exchange_n(&remaining, &expected, initial, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
  }
  for (;;) {
    left = __atomic_load_n(&remaining, __ATOMIC_SEQ_CST);
    if (left == -1) return 1;
    if (left <= 0) return 0;
    if (__atomic_compare_exchange_n(&remaining, &left, left - 1, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      return 1;
  }
}

static int fault_errno(void) {
  const char *value = env("SCORE_SDE_FAULT_ERRNO");
  return value[0] ? atoi(value) : EIO;
}

static void track(int fd, const char *path) {
  if (fd < 0 || fd >= MAX_FDS) return;
  watched[fd] = (char)matches(path);
  if (watched[fd]) {
    size_t m = strlen(path), keep = sizeof(paths[fd]) - 1;
    strncpy(paths[fd], m > keep ? path + m - keep : path, keep);
    paths[fd][keep] = '\0';
  }
}

/* Whether a read / write on fd fails; sets errno when it does. */
static int io_fault(int fd, const char *op) {
  if (fd < 0 || fd >= MAX_FDS || !watched[fd] || !wants(op) || !take_fault()) return 0;
  log_fault(op, paths[fd]);
  errno = fault_errno();
  return 1;
}

#define REAL(name) static __typeof__(&name) real_##name; \
  if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

static int open_common(const char *path) {
  if (matches(path) && wants("open") && take_fault()) {
    log_fault("open", path);
    errno = fault_errno();
    return 1;
  }
  return 0;
}

static mode_t mode_of(int flags, va_list args) {
  return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(args, int) : 0;
}

int open(const char *path, int flags, ...) {
  REAL(open);
  va_list args; va_start(args, flags); mode_t mode = mode_of(flags, args); va_end(args);
  if (open_common(path)) return -1;
  int fd = real_open(path, flags, mode);
  track(fd, path);
  return fd;
}

int open64(const char *path, int flags, ...) {
  REAL(open64);
  va_list args; va_start(args, flags); mode_t mode = mode_of(flags, args); va_end(args);
  if (open_common(path)) return -1;
  int fd = real_open64(path, flags, mode);
  track(fd, path);
  return fd;
}

int openat(int dirfd, const char *path, int flags, ...) {
  REAL(openat);
  va_list args; va_start(args, flags); mode_t mode = mode_of(flags, args); va_end(args);
  if (open_common(path)) return -1;
  int fd = real_openat(dirfd, path, flags, mode);
  track(fd, path);
  return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
  REAL(openat64);
  va_list args; va_start(args, flags); mode_t mode = mode_of(flags, args); va_end(args);
  if (open_common(path)) return -1;
  int fd = real_openat64(dirfd, path, flags, mode);
  track(fd, path);
  return fd;
}

int close(int fd) {
  REAL(close);
  if (fd >= 0 && fd < MAX_FDS) watched[fd] = 0;
  return real_close(fd);
}

ssize_t read(int fd, void *buf, size_t n) {
  REAL(read);
  return io_fault(fd, "read") ? -1 : real_read(fd, buf, n);
}

ssize_t pread(int fd, void *buf, size_t n, off_t offset) {
  REAL(pread);
  return io_fault(fd, "read") ? -1 : real_pread(fd, buf, n, offset);
}

ssize_t pread64(int fd, void *buf, size_t n, off64_t offset) {
  REAL(pread64);
  return io_fault(fd, "read") ? -1 : real_pread64(fd, buf, n, offset);
}

ssize_t readv(int fd, const struct iovec *iov, int count) {
  REAL(readv);
  return io_fault(fd, "read") ? -1 : real_readv(fd, iov, count);
}

ssize_t preadv(int fd, const struct iovec *iov, int count, off_t offset) {
  REAL(preadv);
  return io_fault(fd, "read") ? -1 : real_preadv(fd, iov, count, offset);
}

ssize_t write(int fd, const void *buf, size_t n) {
  REAL(write);
  return io_fault(fd, "write") ? -1 : real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) {
  REAL(pwrite);
  return io_fault(fd, "write") ? -1 : real_pwrite(fd, buf, n, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t offset) {
  REAL(pwrite64);
  return io_fault(fd, "write") ? -1 : real_pwrite64(fd, buf, n, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
  REAL(writev);
  return io_fault(fd, "write") ? -1 : real_writev(fd, iov, count);
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset) {
  REAL(pwritev);
  return io_fault(fd, "write") ? -1 : real_pwritev(fd, iov, count, offset);
}
