/*
 * terrafirma.h: the Terrafirma / Terrarium guest ABI for C (clang, wasm32).
 *
 * A guest exports `void run(void)`; the node calls it once per request, in
 * a fresh instance, and the guest reads the request and sets the response
 * through the `env.hostcall_*` imports declared here. The ABI is described
 * in docs/guest-abi.md, and its imports are listed with their WebAssembly
 * types in sdk/abi.txt, which tests/all/abi_table.rs checks this header
 * against; the names are those of the old `http_hostcalls.h`, so guests
 * written against it build with this header.
 *
 * Build a reactor with wasi-libc (the allocator and printf come from it):
 *
 *   clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 \
 *     -I sdk/c -o hello.wasm examples/c/hello.c
 *
 * Memory: every variable-length result (method, path, headers, bodies, KV
 * values, DNS answers) is allocated by the host with the allocator the guest
 * registered (`tf_init_mm()` registers wasi-libc's malloc and free), is
 * followed by a NUL byte not counted in its length, and belongs to the guest,
 * which frees it with free() (lists: `tf_free_list`). An instance lives for
 * one request, so a guest that never frees loses nothing.
 */
#ifndef TERRAFIRMA_H
#define TERRAFIRMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TF_HOSTCALL(name) __attribute__((import_module("env"), import_name(#name)))

/* Handles: small non-negative integers, valid for the current request. */
typedef int32_t request_t;
typedef int32_t response_t;
typedef int32_t pending_request_t;

enum {
    REQUEST_INCOMING = 0,      /* the incoming request */
    RESPONSE_OUTGOING = 0,     /* the response being built */
    REQUEST_ERROR = -1,        /* hostcall_req_create failed */
    RESPONSE_ERROR = -1,       /* sending failed */
    RESPONSE_NOT_READY = -2,   /* hostcall_pending_req_poll: still in flight */
    PENDING_REQUEST_ERROR = -1 /* hostcall_req_send_async failed */
};

/* Status of the hostcalls that set something. */
enum value_status {
    value_status_ok = 0,
    value_status_invalid = 1 /* bad handle, header name or value, status code */
};

/* One element of a list: `len` bytes at `ptr` (8 bytes on wasm32). Lists
 * the host hands out are arrays of these, each element allocated apart. */
struct string_slice {
    const char *ptr;
    size_t len;
};
typedef struct string_slice GuestSlice;

/* Allocator: both are stored as function-table indices. */
TF_HOSTCALL(hostcall_init_mm)
void hostcall_init_mm(void *(*malloc_impl)(size_t), void (*free_impl)(void *));

/* The incoming request (req: REQUEST_INCOMING). */
TF_HOSTCALL(hostcall_req_get_method)
void hostcall_req_get_method(char **method_p, size_t *len_p, request_t req);
TF_HOSTCALL(hostcall_req_get_path) /* target with query: "/hello/a?b=1" */
void hostcall_req_get_path(char **path_p, size_t *len_p, request_t req);
TF_HOSTCALL(hostcall_req_get_headers) /* distinct names, lower case */
void hostcall_req_get_headers(GuestSlice **names_p, size_t *count_p, request_t req);
TF_HOSTCALL(hostcall_req_get_header) /* all values; count 0 if absent */
void hostcall_req_get_header(GuestSlice **values_p, size_t *count_p, request_t req, const char *name,
                             size_t name_len);
TF_HOSTCALL(hostcall_req_get_body)
void hostcall_req_get_body(uint8_t **body_p, size_t *len_p, request_t req);

/* Outgoing requests: create (absolute URL), set headers and body, send.
 * Hosts outside the site's allow-list fail with RESPONSE_ERROR. */
TF_HOSTCALL(hostcall_req_create)
request_t hostcall_req_create(const char *method, size_t method_len, const char *url, size_t url_len);
TF_HOSTCALL(hostcall_req_set_header)
enum value_status hostcall_req_set_header(request_t req, const char *name, size_t name_len,
                                          const GuestSlice *values, size_t values_count);
TF_HOSTCALL(hostcall_req_set_body)
enum value_status hostcall_req_set_body(request_t req, const void *body, size_t body_len);
TF_HOSTCALL(hostcall_req_send) /* waits; consumes req */
response_t hostcall_req_send(request_t req);
TF_HOSTCALL(hostcall_req_send_async) /* consumes req */
pending_request_t hostcall_req_send_async(request_t req);
TF_HOSTCALL(hostcall_pending_req_poll) /* response, RESPONSE_NOT_READY or RESPONSE_ERROR */
response_t hostcall_pending_req_poll(pending_request_t pending);
TF_HOSTCALL(hostcall_pending_req_wait)
response_t hostcall_pending_req_wait(pending_request_t pending);
TF_HOSTCALL(hostcall_pending_req_select) /* writes the finished one to *pending_out */
response_t hostcall_pending_req_select(const pending_request_t *pendings, size_t count,
                                       pending_request_t *pending_out);

/* Received responses. */
TF_HOSTCALL(hostcall_resp_get_response_code) /* the code, or -1 for a bad handle */
int32_t hostcall_resp_get_response_code(response_t resp);
TF_HOSTCALL(hostcall_resp_get_headers)
void hostcall_resp_get_headers(GuestSlice **names_p, size_t *count_p, response_t resp);
TF_HOSTCALL(hostcall_resp_get_header)
void hostcall_resp_get_header(GuestSlice **values_p, size_t *count_p, response_t resp, const char *name,
                              size_t name_len);
TF_HOSTCALL(hostcall_resp_get_body)
void hostcall_resp_get_body(uint8_t **body_p, size_t *len_p, response_t resp);

/* The outgoing response (resp: RESPONSE_OUTGOING): status 200, no
 * headers and an empty body unless set. */
TF_HOSTCALL(hostcall_resp_set_response_code) /* invalid outside 100..=999 */
enum value_status hostcall_resp_set_response_code(response_t resp, int32_t code);
TF_HOSTCALL(hostcall_resp_set_header) /* replaces the header; one line per value */
enum value_status hostcall_resp_set_header(response_t resp, const char *name, size_t name_len,
                                           const GuestSlice *values, size_t values_count);
TF_HOSTCALL(hostcall_resp_set_body)
enum value_status hostcall_resp_set_body(response_t resp, const void *body, size_t body_len);

/* The site's durable key-value store. */
TF_HOSTCALL(hostcall_kvstore_insert) /* true if the key was new */
bool hostcall_kvstore_insert(const char *key, size_t key_len, const void *value, size_t value_len);
TF_HOSTCALL(hostcall_kvstore_upsert) /* set only if absent; true if set */
bool hostcall_kvstore_upsert(const char *key, size_t key_len, const void *value, size_t value_len);
TF_HOSTCALL(hostcall_kvstore_append) /* true if the key was new */
bool hostcall_kvstore_append(const char *key, size_t key_len, const void *value, size_t value_len);
TF_HOSTCALL(hostcall_kvstore_get) /* false and *value_p NULL if absent */
bool hostcall_kvstore_get(uint8_t **value_p, size_t *len_p, const char *key, size_t key_len);
TF_HOSTCALL(hostcall_kvstore_remove) /* true if a value was removed */
bool hostcall_kvstore_remove(const char *key, size_t key_len);

/* Random numbers, time, DNS, logging. */
TF_HOSTCALL(hostcall_rng_next_u64)
uint64_t hostcall_rng_next_u64(void);
TF_HOSTCALL(hostcall_time_now) /* seconds since the epoch; nanos if not NULL */
uint64_t hostcall_time_now(uint32_t *subsec_nanos_p);
TF_HOSTCALL(hostcall_dns_query_ip) /* addresses: 4- or 16-byte slices */
bool hostcall_dns_query_ip(GuestSlice **addrs_p, size_t *count_p, const char *name, size_t name_len, bool ipv6);
TF_HOSTCALL(hostcall_dns_query_raw) /* wire-format query and answer */
bool hostcall_dns_query_raw(uint8_t **answer_p, size_t *len_p, const void *query, size_t query_len);
TF_HOSTCALL(hostcall_debug) /* a line for the site's log; len (size_t)-1: NUL-terminated */
void hostcall_debug(const char *msg, size_t msg_len);
TF_HOSTCALL(hostcall_panic_hook) /* a fatal message; the guest traps right after */
void hostcall_panic_hook(const char *msg, size_t msg_len);

/* Helpers. */

/* Registers wasi-libc's malloc and free: call first in run(). */
static inline void tf_init_mm(void) {
    hostcall_init_mm(malloc, free);
}

/* Frees a list the host handed out, its elements and the array. */
static inline void tf_free_list(GuestSlice *list, size_t count) {
    for (size_t i = 0; i < count; i++) {
        free((void *)list[i].ptr);
    }
    free(list);
}

/* Sets one header of the outgoing response to one NUL-terminated value. */
static inline enum value_status tf_set_header(const char *name, const char *value) {
    GuestSlice slice = {value, strlen(value)};
    return hostcall_resp_set_header(RESPONSE_OUTGOING, name, strlen(name), &slice, 1);
}

/* Sets the outgoing status and a text/plain body from a NUL-terminated string. */
static inline void tf_respond_text(uint16_t code, const char *body) {
    hostcall_resp_set_response_code(RESPONSE_OUTGOING, code);
    tf_set_header("content-type", "text/plain; charset=utf-8");
    hostcall_resp_set_body(RESPONSE_OUTGOING, body, strlen(body));
}

/* Writes a NUL-terminated line to the site's log. */
static inline void tf_debug(const char *msg) {
    hostcall_debug(msg, (size_t)-1);
}

#undef TF_HOSTCALL

#ifdef __cplusplus
}
#endif

#endif /* TERRAFIRMA_H */
