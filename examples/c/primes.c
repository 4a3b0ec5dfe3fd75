/* primes: answers how many primes there are up to N, for a path ending in
 * N ("/primes/1000" -> "168 primes up to 1000"; no number: N = 1000000).
 *
 * The work is done once, in a constructor that wasi-libc's `_initialize`
 * runs: a sieve of every number below a million and a running count per
 * block of 1024. A request only reads those tables. The node runs the
 * constructor at upload and serves every request from the memory it left
 * (the upload answer says "initialization": "snapshot"); a site with
 * `preinitialize = false` runs it on every request instead. */
#include <stdio.h>

#include "terrafirma.h"

#define LIMIT 1000000
#define BLOCK 1024

static unsigned char composite[LIMIT + 1];
static unsigned int primes_before_block[LIMIT / BLOCK + 2];

__attribute__((constructor)) static void sieve(void) {
    composite[0] = composite[1] = 1;
    for (unsigned int i = 2; i * i <= LIMIT; i++) {
        if (!composite[i]) {
            for (unsigned int j = i * i; j <= LIMIT; j += i) {
                composite[j] = 1;
            }
        }
    }
    unsigned int count = 0;
    for (unsigned int i = 0; i <= LIMIT; i++) {
        if (i % BLOCK == 0) {
            primes_before_block[i / BLOCK] = count;
        }
        count += !composite[i];
    }
}

static unsigned int primes_up_to(unsigned int n) {
    unsigned int count = primes_before_block[n / BLOCK];
    for (unsigned int i = n - n % BLOCK; i <= n; i++) {
        count += !composite[i];
    }
    return count;
}

__attribute__((export_name("run"))) void run(void) {
    tf_init_mm();
    char *path;
    size_t path_len;
    hostcall_req_get_path(&path, &path_len, REQUEST_INCOMING);
    /* The digits at the end of the path, before any query. */
    size_t end = strcspn(path, "?");
    size_t start = end;
    while (start > 0 && path[start - 1] >= '0' && path[start - 1] <= '9') {
        start--;
    }
    unsigned long n = LIMIT;
    if (start < end) {
        n = strtoul(path + start, NULL, 10);
    }
    size_t digits = end - start;
    free(path);
    char text[64];
    if (n > LIMIT || digits > 7) {
        snprintf(text, sizeof text, "this guest counts up to %d\n", LIMIT);
        tf_respond_text(400, text);
        return;
    }
    snprintf(text, sizeof text, "%u primes up to %lu\n", primes_up_to((unsigned int)n), n);
    tf_respond_text(200, text);
}
