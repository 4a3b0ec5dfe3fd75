/* all_imports: imports every hostcall terrafirma.h declares, so that
 * tests/all/abi_table.rs can check the header's signatures against the
 * ABI's table, sdk/abi.txt. Every request gets 200 and the number of
 * hostcalls it imports. */
#include <stdio.h>

#include "terrafirma.h"

/* The address (the table index) of every hostcall: taking it keeps the
 * import in the module whether or not the guest calls it. */
__attribute__((used)) static const void *const hostcalls[] = {
    (const void *)hostcall_init_mm,
    (const void *)hostcall_req_get_method,
    (const void *)hostcall_req_get_path,
    (const void *)hostcall_req_get_headers,
    (const void *)hostcall_req_get_header,
    (const void *)hostcall_req_get_body,
    (const void *)hostcall_req_create,
    (const void *)hostcall_req_set_header,
    (const void *)hostcall_req_set_body,
    (const void *)hostcall_req_send,
    (const void *)hostcall_req_send_async,
    (const void *)hostcall_pending_req_poll,
    (const void *)hostcall_pending_req_wait,
    (const void *)hostcall_pending_req_select,
    (const void *)hostcall_resp_get_response_code,
    (const void *)hostcall_resp_get_headers,
    (const void *)hostcall_resp_get_header,
    (const void *)hostcall_resp_get_body,
    (const void *)hostcall_resp_set_response_code,
    (const void *)hostcall_resp_set_header,
    (const void *)hostcall_resp_set_body,
    (const void *)hostcall_kvstore_insert,
    (const void *)hostcall_kvstore_upsert,
    (const void *)hostcall_kvstore_append,
    (const void *)hostcall_kvstore_get,
    (const void *)hostcall_kvstore_remove,
    (const void *)hostcall_rng_next_u64,
    (const void *)hostcall_time_now,
    (const void *)hostcall_dns_query_ip,
    (const void *)hostcall_dns_query_raw,
    (const void *)hostcall_debug,
    (const void *)hostcall_panic_hook,
};

/* What WebAssembly types cannot tell: the results that may be -1 (or -2)
 * are signed. */
#define TF_SIGNED(call) _Static_assert((__typeof__(call))-1 < 0, #call " must return a signed type")
TF_SIGNED(hostcall_req_create(NULL, 0, NULL, 0));
TF_SIGNED(hostcall_req_send(0));
TF_SIGNED(hostcall_req_send_async(0));
TF_SIGNED(hostcall_pending_req_poll(0));
TF_SIGNED(hostcall_pending_req_wait(0));
TF_SIGNED(hostcall_pending_req_select(NULL, 0, NULL));
TF_SIGNED(hostcall_resp_get_response_code(0));

__attribute__((export_name("run"))) void run(void) {
    /* A volatile read: the optimiser keeps the table, and every import. */
    const void *const volatile *table = hostcalls;
    size_t count = 0;
    for (size_t i = 0; i < sizeof hostcalls / sizeof hostcalls[0]; i++) {
        count += table[i] != NULL;
    }
    char body[32];
    snprintf(body, sizeof body, "%zu hostcalls\n", count);
    tf_respond_text(200, body);
}
