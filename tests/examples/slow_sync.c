/* A slow disk for the files whose path holds SLOW_SYNC_MATCH: fsync and fdatasync on them
 * take SLOW_SYNC_MS longer (the calling thread sleeps, then syncs). Loaded with LD_PRELOAD by
 * the approval_rtt example's slow-disk mode; not part of any product.
 *
 *   cc -shared -fPIC -O2 -o slow_sync.so slow_sync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int matches(int fd) {
    const char *match = getenv("SLOW_SYNC_MATCH");
    char link[64], path[4096];
    ssize_t n;
    if (match == NULL || *match == '\0') return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

static void slow(int fd) {
    const char *ms = getenv("SLOW_SYNC_MS");
    if (ms != NULL && matches(fd)) {
        long m = atol(ms);
        struct timespec t = { m / 1000, (m % 1000) * 1000000L };
        nanosleep(&t, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow(fd);
    return real(fd);
}
