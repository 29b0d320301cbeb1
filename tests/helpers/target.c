/* A process whose memory layout tests change on command, so the kernel can be the oracle.
 *
 * Reads one command per line on stdin, performs it, and answers one line on stdout
 * ("ok ..." with any addresses involved, or "err ..."). Commands:
 *   dlopen PATH | dlclose | heap BYTES | stack BYTES | anon BYTES | unmap-anon | rwx |
 *   thread | shm | memfd | deleted DIR | weird DIR | pages N | title TEXT | map PATH | quit
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

static volatile char big_bss[3 << 20];  /* bss of the program: 3 MiB */
static char small_data[4096] = {1};     /* data of the program */
static void *lib;
static void *anon_area;
static size_t anon_size;
static char *pair;

static void *thread_main(void *arg) {
    (void)arg;
    for (;;) pause();                    /* blocked in a syscall: its sp is readable */
    return NULL;
}

static size_t grow_stack(size_t bytes) {
    volatile char *p = alloca(bytes);
    for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    return (size_t)(uintptr_t)p;
}

static int write_file(const char *path, size_t size) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    if (ftruncate(fd, size) != 0) { close(fd); return -1; }
    return fd;
}

int main(int argc, char **argv) {
    char line[4096];
    setvbuf(stdout, NULL, _IOLBF, 0);
    big_bss[0] = small_data[0];
    big_bss[sizeof big_bss - 1] = 1;
    printf("ready %d\n", getpid());
    while (fgets(line, sizeof line, stdin)) {
        char arg[4000] = "";
        char cmd[64] = "";
        sscanf(line, "%63s %3999[^\n]", cmd, arg);
        if (!strcmp(cmd, "quit")) {
            printf("ok\n");
            return 0;
        } else if (!strcmp(cmd, "dlopen")) {
            lib = dlopen(arg, RTLD_NOW);
            printf(lib ? "ok\n" : "err %s\n", dlerror());
        } else if (!strcmp(cmd, "dlclose")) {
            printf(lib && dlclose(lib) == 0 ? "ok\n" : "err dlclose\n");
            lib = NULL;
        } else if (!strcmp(cmd, "heap")) {
            size_t n = strtoull(arg, NULL, 10);
            char *p = sbrk((intptr_t)n);
            if (p == (void *)-1) { printf("err sbrk\n"); continue; }
            memset(p, 1, n);
            printf("ok %p\n", (void *)p);
        } else if (!strcmp(cmd, "stack")) {
            printf("ok 0x%zx\n", grow_stack(strtoull(arg, NULL, 10)));
        } else if (!strcmp(cmd, "anon")) {
            anon_size = strtoull(arg, NULL, 10);
            anon_area = mmap(NULL, anon_size, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (anon_area == MAP_FAILED) { printf("err mmap\n"); continue; }
            memset(anon_area, 1, anon_size);
            printf("ok %p\n", anon_area);
        } else if (!strcmp(cmd, "unmap-anon")) {
            printf(munmap(anon_area, anon_size) == 0 ? "ok\n" : "err munmap\n");
        } else if (!strcmp(cmd, "rwx")) {
            char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) { printf("err mmap\n"); continue; }
            p[0] = (char)0xc3;
            printf("ok %p\n", (void *)p);
        } else if (!strcmp(cmd, "thread")) {
            /* answers the lowest address of the new thread's stack (above its guard) */
            pthread_t t;
            pthread_attr_t attr;
            void *stack;
            size_t stack_size;
            if (pthread_create(&t, NULL, thread_main, NULL) != 0 ||
                pthread_getattr_np(t, &attr) != 0 ||
                pthread_attr_getstack(&attr, &stack, &stack_size) != 0) {
                printf("err thread\n");
                continue;
            }
            pthread_attr_destroy(&attr);
            printf("ok %p\n", stack);
        } else if (!strcmp(cmd, "shm")) {
            int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
            char *p = id < 0 ? (char *)-1 : shmat(id, NULL, 0);
            if (p == (char *)-1) { printf("err shm %s\n", strerror(errno)); continue; }
            shmctl(id, IPC_RMID, NULL);     /* removed at exit; the mapping stays */
            p[0] = 1;
            printf("ok %p\n", (void *)p);
        } else if (!strcmp(cmd, "memfd")) {
            int fd = memfd_create("memsnap-test", 0);
            if (fd < 0 || ftruncate(fd, 65536) != 0) { printf("err memfd\n"); continue; }
            char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) { printf("err mmap\n"); continue; }
            p[0] = 1;
            printf("ok %p\n", (void *)p);
        } else if (!strcmp(cmd, "deleted") || !strcmp(cmd, "weird")) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", arg,
                     !strcmp(cmd, "deleted") ? "gone.bin" : "we ird\nname.bin");
            int fd = write_file(path, 8192);
            char *p = fd < 0 ? MAP_FAILED : mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) { printf("err file\n"); continue; }
            close(fd);
            if (!strcmp(cmd, "deleted")) unlink(path);
            printf("ok %p\n", (void *)p);
        } else if (!strcmp(cmd, "pages")) {
            /* N one-page mappings with alternating protections: the kernel cannot merge
             * them, so the process gets N more regions. */
            long n = strtol(arg, NULL, 10);
            char *p = mmap(NULL, (size_t)n * 4096, PROT_READ,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) { printf("err mmap\n"); continue; }
            for (long i = 0; i < n; i += 2) mprotect(p + i * 4096, 4096, PROT_READ | PROT_WRITE);
            printf("ok %p\n", (void *)p);
        } else if (!strcmp(cmd, "title")) {
            /* Rewrite the command line in place, as setproctitle does: the text, then
             * NUL bytes over the rest of the argument area. */
            char *end = argv[argc - 1] + strlen(argv[argc - 1]);
            size_t room = (size_t)(end - argv[0]);
            memset(argv[0], 0, room);
            memcpy(argv[0], arg, strlen(arg) < room ? strlen(arg) : room);
            printf("ok\n");
        } else if (!strcmp(cmd, "pair")) {
            /* Two one-page anonymous regions split by a PROT_NONE page, the first
             * touched: "move" then moves the resident page to the second region (every
             * total stays), "grow" touches the second too (the layout stays). */
            pair = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (pair == MAP_FAILED || mprotect(pair + 4096, 4096, PROT_NONE) != 0) {
                printf("err pair\n");
                continue;
            }
            pair[0] = 1;
            printf("ok %p\n", (void *)pair);
        } else if (!strcmp(cmd, "move")) {
            if (madvise(pair, 4096, MADV_DONTNEED) != 0) { printf("err madvise\n"); continue; }
            pair[2 * 4096] = 1;
            printf("ok\n");
        } else if (!strcmp(cmd, "grow")) {
            pair[2 * 4096] = 1;
            printf("ok\n");
        } else if (!strcmp(cmd, "map")) {
            /* Map an existing file (read-only, shared) and leave it in place. */
            int fd = open(arg, O_RDONLY);
            char *p = fd < 0 ? MAP_FAILED : mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) { printf("err map\n"); continue; }
            close(fd);
            printf("ok %p\n", (void *)p);
        } else {
            printf("err unknown command %s\n", cmd);
        }
    }
    return 0;
}
