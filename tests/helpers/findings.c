/* A process that builds, on command, each layout `memsnap check` should find suspicious,
 * so the findings rules can be tested against the kernel's own maps.
 *
 * Same protocol as target.c: prints "ready PID", then reads one command per line on
 * stdin and answers one line ("ok ADDRESS" in hex, or "err WHY"). Commands:
 *   rw             an anonymous read-write page, written (between two PROT_NONE pages,
 *                  so the kernel cannot merge it with a neighbour)
 *   rwx            the same, read-write-execute
 *   make-x ADDR    make the page at ADDR read-execute
 *   memfd          a memfd mapped private and executable (as a loaded ELF would be)
 *   memfd-dual     a memfd mapped shared twice: read-write and read-execute (a JIT's
 *                  dual mapping); answers the executable address
 *   dlopen PATH    load a library; answers the address of its handle's first page
 *   patch SYMBOL   make the page of SYMBOL (in the library last loaded) writable, write
 *                  it, make it executable again
 *   exec-stack     make the whole [stack] mapping read-write-execute
 *   exec-heap      make the whole [heap] mapping read-write-execute
 *   ddexec         an anonymous read-only page below 0x10000000
 *   quit
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static void *lib;
static long page;

static void *guarded_page(int prot) {
    char *area = mmap(NULL, 3 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) return NULL;
    char *middle = area + page;
    if (mprotect(middle, page, PROT_READ | PROT_WRITE) != 0) return NULL;
    memset(middle, 0xc3, page); /* written: the page is resident and dirty */
    if (prot != (PROT_READ | PROT_WRITE) && mprotect(middle, page, prot) != 0) return NULL;
    return middle;
}

static int memfd_of_one_page(const char *name) {
    int fd = (int)syscall(SYS_memfd_create, name, 0);
    if (fd < 0) return -1;
    if (ftruncate(fd, page) != 0) return -1;
    return fd;
}

/* The bounds of the mapping named NAME in /proc/self/maps. */
static int find_mapping(const char *name, uintptr_t *start, uintptr_t *end) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if (!maps) return 0;
    while (!found && fgets(line, sizeof line, maps)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        if (n >= strlen(name) && !strcmp(line + n - strlen(name), name))
            found = sscanf(line, "%lx-%lx", (unsigned long *)start, (unsigned long *)end) == 2;
    }
    fclose(maps);
    return found;
}

static void answer(void *addr) {
    if (addr)
        printf("ok %lx\n", (unsigned long)(uintptr_t)addr);
    else
        printf("err failed\n");
}

static void *make_whole_rwx(const char *name) {
    uintptr_t start, end;
    if (!find_mapping(name, &start, &end)) return NULL;
    if (mprotect((void *)start, end - start, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
        return NULL;
    return (void *)start;
}

int main(void) {
    char line[4096];
    setvbuf(stdout, NULL, _IOLBF, 0);
    page = sysconf(_SC_PAGESIZE);
    free(malloc(64)); /* the heap exists from here on */
    printf("ready %d\n", getpid());
    while (fgets(line, sizeof line, stdin)) {
        char cmd[64] = "", arg[4000] = "";
        sscanf(line, "%63s %3999[^\n]", cmd, arg);
        if (!strcmp(cmd, "quit")) {
            printf("ok\n");
            return 0;
        } else if (!strcmp(cmd, "rw")) {
            answer(guarded_page(PROT_READ | PROT_WRITE));
        } else if (!strcmp(cmd, "rwx")) {
            answer(guarded_page(PROT_READ | PROT_WRITE | PROT_EXEC));
        } else if (!strcmp(cmd, "make-x")) {
            void *addr = (void *)(uintptr_t)strtoul(arg, NULL, 16);
            answer(mprotect(addr, page, PROT_READ | PROT_EXEC) == 0 ? addr : NULL);
        } else if (!strcmp(cmd, "memfd")) {
            int fd = memfd_of_one_page("payload");
            void *p = fd < 0 ? MAP_FAILED
                             : mmap(NULL, page, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
            answer(p == MAP_FAILED ? NULL : p);
        } else if (!strcmp(cmd, "memfd-dual")) {
            int fd = memfd_of_one_page("jit-code");
            void *w = fd < 0 ? MAP_FAILED
                             : mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            void *x = w == MAP_FAILED
                          ? MAP_FAILED
                          : mmap(NULL, page, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
            if (x != MAP_FAILED) memset(w, 0xc3, page);
            answer(x == MAP_FAILED ? NULL : x);
        } else if (!strcmp(cmd, "dlopen")) {
            lib = dlopen(arg, RTLD_NOW | RTLD_LOCAL);
            if (!lib) {
                printf("err %s\n", dlerror());
                continue;
            }
            answer(lib);
        } else if (!strcmp(cmd, "patch")) {
            char *fn = lib ? dlsym(lib, arg) : NULL;
            if (!fn) {
                printf("err no symbol %s\n", arg);
                continue;
            }
            char *at = (char *)((uintptr_t)fn & ~(uintptr_t)(page - 1));
            int ok = mprotect(at, page, PROT_READ | PROT_WRITE) == 0;
            if (ok) {
                volatile char *p = at;
                p[0] = p[0]; /* the same byte: the page is copied on write, nothing breaks */
                ok = mprotect(at, page, PROT_READ | PROT_EXEC) == 0;
            }
            answer(ok ? at : NULL);
        } else if (!strcmp(cmd, "exec-stack")) {
            answer(make_whole_rwx("[stack]"));
        } else if (!strcmp(cmd, "exec-heap")) {
            answer(make_whole_rwx("[heap]"));
        } else if (!strcmp(cmd, "ddexec")) {
            void *want = (void *)(uintptr_t)0x6660000;
            void *p = mmap(want, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                           -1, 0);
            answer(p == want ? p : NULL);
        } else {
            printf("err unknown command %s\n", cmd);
        }
    }
    return 0;
}
