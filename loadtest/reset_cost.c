/* What resetting a small pool slot costs, each way, in a hot loop: the
 * PAGEMAP_SCAN ioctl over a 64 KiB private file mapping (wasmtime's scan,
 * same arguments), a pread of /proc/self/pagemap for the same pages,
 * getpid (a bare system call), mincore, and a memset of 60 KiB.
 *
 *   cc -O2 loadtest/reset_cost.c -o /tmp/reset_cost && /tmp/reset_cost [EXTRA_VMAS]
 *
 * EXTRA_VMAS maps that many more areas first (the node's pool has ~2,000).
 * Linux 6.7 or later (PAGEMAP_SCAN); the structures are declared here
 * because older kernel headers lack them. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct page_region { uint64_t start, end, categories; };
struct pm_scan_arg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_PFNZERO (1 << 5)

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
  int extra = argc > 1 ? atoi(argv[1]) : 0;
  size_t len = 64 << 10;
  for (int i = 0; i < extra; i++) {
    char *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(p, 4096, PROT_NONE);
  }
  int fd = memfd_create("image", 0);
  if (fd < 0 || ftruncate(fd, len) < 0) { perror("memfd"); return 1; }
  char *reserve = mmap(0, 1 << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char *mem = mmap(reserve, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
  volatile char first = mem[16];
  (void)first;
  int pagemap = open("/proc/self/pagemap", O_RDONLY);
  if (pagemap < 0) { perror("pagemap"); return 1; }
  struct page_region regions[32];
  uint64_t entries[16];
  unsigned char resident[16];
  const int n = 200000;

  double t0 = now_ns();
  for (int i = 0; i < n; i++) {
    struct pm_scan_arg arg = {0};
    arg.size = sizeof arg;
    arg.start = (uint64_t)mem;
    arg.end = (uint64_t)mem + len;
    arg.vec = (uint64_t)regions;
    arg.vec_len = 32;
    arg.max_pages = len / 4096;
    arg.category_inverted = PAGE_IS_PFNZERO | PAGE_IS_FILE;
    arg.category_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_PFNZERO | PAGE_IS_FILE;
    if (ioctl(pagemap, PAGEMAP_SCAN, &arg) < 0) { perror("PAGEMAP_SCAN"); return 1; }
  }
  double t1 = now_ns();
  for (int i = 0; i < n; i++)
    if (pread(pagemap, entries, sizeof entries, ((uint64_t)mem / 4096) * 8) != sizeof entries) { perror("pread"); return 1; }
  double t2 = now_ns();
  for (int i = 0; i < n; i++) syscall(SYS_getpid);
  double t3 = now_ns();
  for (int i = 0; i < n; i++) mincore(mem, len, resident);
  double t4 = now_ns();
  for (int i = 0; i < n; i++) {
    memset(mem + 4096, 0, len - 4096);
    __asm__ volatile("" ::: "memory");
  }
  double t5 = now_ns();
  printf("extra_vmas=%d PAGEMAP_SCAN %.0f ns, pread pagemap %.0f ns, getpid %.0f ns, mincore %.0f ns, memset 60 KiB %.0f ns\n",
         extra, (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t4 - t3) / n, (t5 - t4) / n);
  return 0;
}
