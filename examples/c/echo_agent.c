/* A C guest (clang, wasi-libc, reactor): registers wasi-libc's malloc/free with
 * hostcall_init_mm as function-table indices, reads the path and the
 * User-Agent header (strdup relies on the NUL the host adds), answers with a
 * text/plain body. printf goes to the node's log. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdint.h>

typedef struct { char *ptr; size_t len; } GuestSlice;
extern void hostcall_init_mm(void *(*malloc_fn)(size_t), void (*free_fn)(void *));
extern void hostcall_req_get_path(char **ptr_p, size_t *len_p, int32_t req);
extern void hostcall_req_get_header(GuestSlice **values_p, size_t *count_p, int32_t req, const char *name, size_t name_len);
extern int32_t hostcall_resp_set_body(int32_t resp, const char *body, size_t len);
extern int32_t hostcall_resp_set_header(int32_t resp, const char *name, size_t name_len, const GuestSlice *values, size_t count);

__attribute__((export_name("run")))
void run(void) {
    hostcall_init_mm(malloc, free);
    char *path; size_t path_len;
    hostcall_req_get_path(&path, &path_len, 0);
    GuestSlice *ua; size_t ua_count;
    hostcall_req_get_header(&ua, &ua_count, 0, "user-agent", 10);
    char *agent = ua_count ? strdup(ua[0].ptr) : strdup("none");
    char body[512];
    int n = snprintf(body, sizeof body, "C guest: path=%s agent=%s\n", path, agent);
    printf("C guest served %s\n", path);
    GuestSlice v = { "text/plain", 10 };
    hostcall_resp_set_header(0, "content-type", 12, &v, 1);
    hostcall_resp_set_body(0, body, (size_t)n);
}
