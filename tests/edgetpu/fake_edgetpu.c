/* A stand-in for libedgetpu.so.1, built by the tests with `cc -shared -fPIC`. It behaves the ways a real Edge TPU
   stack does when it goes wrong, chosen by FAKE_EDGETPU:
     segv (default)  crashes when the delegate is created (Coral's TF 2.5 build under a newer runtime)
     hang            never returns from creating the delegate
     null            returns NULL after reporting an error (no TPU answering)
     ok              returns a working delegate that claims no nodes, so the interpreter runs the model on its CPU
                     kernels (the test's "_edgetpu" files are copies of CPU models)
   With FAKE_EDGETPU_CRASH_WHEN=<file>, an ok delegate starts a thread that raises SIGSEGV once that file exists:
   a TPU that crashes the process mid-run, at a moment the test chooses. With FAKE_EDGETPU_LOG=<file>, each call
   appends "create <pid>" there, so a test can see that the runtime's real load_delegate reached the library.
   -DFAKE_EDGETPU_DEFAULT='"null"' changes the mode used when FAKE_EDGETPU is unset: make pi-test's stand-in .deb
   behaves so, like the real library with no accelerator plugged in. */
#include <pthread.h>
#include <stdio.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FAKE_EDGETPU_DEFAULT
#define FAKE_EDGETPU_DEFAULT "segv"
#endif

/* TfLiteDelegate's layout: data_, Prepare, CopyFromBufferHandle, CopyToBufferHandle, FreeBufferHandle, flags,
   opaque_delegate_builder; padded, since newer runtimes may read further fields (zero = unused). */
typedef struct {
  void *data_;
  int (*Prepare)(void *context, void *delegate);
  void *copy_from, *copy_to, *free_handle;
  int64_t flags;
  void *opaque;
  void *reserved[8];
} FakeDelegate;

static int prepare(void *context, void *delegate) { (void)context; (void)delegate; return 0; /* kTfLiteOk */ }

static void *crash_when(void *arg) {
  const char *path = (const char *)arg;
  while (access(path, F_OK) != 0) usleep(20000);
  raise(SIGSEGV);
  return NULL;
}

void *tflite_plugin_create_delegate(char **keys, char **values, size_t n, void (*report_error)(const char *)) {
  (void)keys; (void)values; (void)n;
  const char *log = getenv("FAKE_EDGETPU_LOG");
  if (log && *log) {
    FILE *f = fopen(log, "a");
    if (f) { fprintf(f, "create %d\n", (int)getpid()); fclose(f); }
  }
  const char *mode = getenv("FAKE_EDGETPU");
  if (!mode || !*mode) mode = FAKE_EDGETPU_DEFAULT;
  if (mode && strcmp(mode, "hang") == 0) { for (;;) pause(); }
  if (mode && strcmp(mode, "null") == 0) { if (report_error) report_error("no Edge TPU device found (stand-in libedgetpu)"); return NULL; }
  if (mode && strcmp(mode, "ok") == 0) {
    FakeDelegate *d = calloc(1, sizeof *d);
    d->Prepare = prepare;
    const char *when = getenv("FAKE_EDGETPU_CRASH_WHEN");
    if (when && *when) {
      pthread_t t;
      if (pthread_create(&t, NULL, crash_when, strdup(when)) == 0) pthread_detach(t);
    }
    return d;
  }
  raise(SIGSEGV);
  return NULL;
}

void tflite_plugin_destroy_delegate(void *d) { free(d); }
