/* A user-space stand-in for the kernel's DMA-BUF system heap, for `make picamera-test` on a kernel without one.
 *
 * libcamera allocates the virtual camera's frame buffers from a /dev/dma_heap/ heap or /dev/udmabuf (DmaBufAllocator);
 * the project's machines run a kernel with neither. Preloaded (LD_PRELOAD) into the daemon, this library answers
 * for /dev/dma_heap/system: DMA_HEAP_IOCTL_ALLOC gives a memfd of the asked size (mmap-able, as a dma-buf is),
 * DMA_BUF_SET_NAME and DMA_BUF_IOCTL_SYNC on such a buffer succeed (nothing to name, no cache to sync). Everything
 * else goes to the C library untouched: libcamera's pipeline, its requests and its Python bindings are the real
 * ones; only the kernel's allocator is stood in for.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define HEAP "/dev/dma_heap/system"
#define MAX_FD 4096

static char ours[MAX_FD]; /* 1: the heap's handle or a buffer this library made */

static int heap_open(void) {
  int fd = memfd_create("fallwatch-dma-heap", MFD_CLOEXEC);
  if (fd >= 0 && fd < MAX_FD) ours[fd] = 1;
  return fd;
}

#define OPEN_WRAPPER(name, ...)                                                   \
  int name(__VA_ARGS__, int flags, ...) {                                         \
    static int (*real)(OPEN_ARGS, int, ...);                                      \
    mode_t mode = 0;                                                              \
    if (flags & (O_CREAT | O_TMPFILE)) {                                          \
      va_list ap;                                                                 \
      va_start(ap, flags);                                                        \
      mode = va_arg(ap, mode_t);                                                  \
      va_end(ap);                                                                 \
    }                                                                             \
    if (strcmp(path, HEAP) == 0) return heap_open();                              \
    if (!real) real = dlsym(RTLD_NEXT, #name);                                    \
    return real(OPEN_CALL, flags, mode);                                          \
  }

#define OPEN_ARGS const char *
#define OPEN_CALL path
OPEN_WRAPPER(open, const char *path)
OPEN_WRAPPER(open64, const char *path)
#undef OPEN_ARGS
#undef OPEN_CALL
#define OPEN_ARGS int, const char *
#define OPEN_CALL dirfd, path
OPEN_WRAPPER(openat, int dirfd, const char *path)
OPEN_WRAPPER(openat64, int dirfd, const char *path)

int close(int fd) {
  static int (*real)(int);
  if (!real) real = dlsym(RTLD_NEXT, "close");
  if (fd >= 0 && fd < MAX_FD) ours[fd] = 0;
  return real(fd);
}

int ioctl(int fd, unsigned long request, ...) {
  static int (*real)(int, unsigned long, ...);
  va_list ap;
  va_start(ap, request);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (fd >= 0 && fd < MAX_FD && ours[fd]) {
    if (request == DMA_HEAP_IOCTL_ALLOC) {
      struct dma_heap_allocation_data *alloc = arg;
      int buf = memfd_create("fallwatch-dma-buf", MFD_CLOEXEC);
      if (buf < 0) return -1;
      if (ftruncate(buf, (off_t)alloc->len) < 0) {
        int saved = errno;
        close(buf);
        errno = saved;
        return -1;
      }
      if (buf < MAX_FD) ours[buf] = 1;
      alloc->fd = (unsigned int)buf;
      return 0;
    }
    if (request == DMA_BUF_SET_NAME_A || request == DMA_BUF_SET_NAME_B || request == DMA_BUF_IOCTL_SYNC) return 0;
  }
  if (!real) real = dlsym(RTLD_NEXT, "ioctl");
  return real(fd, request, arg);
}
