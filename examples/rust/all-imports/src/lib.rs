//! all-imports: imports every hostcall the SDK declares
//! (`terrafirma_guest::sys`), so that `tests/all/abi_table.rs` can check
//! the SDK's signatures against the ABI's table, `sdk/abi.txt`. Every
//! request gets `200` and the number of hostcalls it imports.
use terrafirma_guest::http::StatusCode;
use terrafirma_guest::sys::*;
use terrafirma_guest::{Request, Response, text};

/// The address (on wasm32, the table index) of every hostcall: taking it
/// keeps the import in the module whether or not the guest calls it.
struct Hostcalls([*const (); 32]);

// SAFETY: addresses only, never called through.
unsafe impl Sync for Hostcalls {}

#[used]
static HOSTCALLS: Hostcalls = Hostcalls([
    hostcall_init_mm as *const (),
    hostcall_req_get_method as *const (),
    hostcall_req_get_path as *const (),
    hostcall_req_get_headers as *const (),
    hostcall_req_get_header as *const (),
    hostcall_req_get_body as *const (),
    hostcall_req_create as *const (),
    hostcall_req_set_header as *const (),
    hostcall_req_set_body as *const (),
    hostcall_req_send as *const (),
    hostcall_req_send_async as *const (),
    hostcall_pending_req_poll as *const (),
    hostcall_pending_req_wait as *const (),
    hostcall_pending_req_select as *const (),
    hostcall_resp_get_response_code as *const (),
    hostcall_resp_get_headers as *const (),
    hostcall_resp_get_header as *const (),
    hostcall_resp_get_body as *const (),
    hostcall_resp_set_response_code as *const (),
    hostcall_resp_set_header as *const (),
    hostcall_resp_set_body as *const (),
    hostcall_kvstore_insert as *const (),
    hostcall_kvstore_upsert as *const (),
    hostcall_kvstore_append as *const (),
    hostcall_kvstore_get as *const (),
    hostcall_kvstore_remove as *const (),
    hostcall_rng_next_u64 as *const (),
    hostcall_time_now as *const (),
    hostcall_dns_query_ip as *const (),
    hostcall_dns_query_raw as *const (),
    hostcall_debug as *const (),
    hostcall_panic_hook as *const (),
]);

fn all_imports(_request: Request) -> Response {
    // SAFETY: a plain read of a static. Volatile, so that the optimiser
    // keeps the table (and with it every import) even if `#[used]` did not.
    let hostcalls = unsafe { core::ptr::read_volatile(&HOSTCALLS.0) };
    text(StatusCode::OK, format!("{} hostcalls\n", hostcalls.len()))
}

terrafirma_guest::main!(all_imports);
