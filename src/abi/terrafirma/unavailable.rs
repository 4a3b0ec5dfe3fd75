//! Hostcalls of the ABI that this node does not provide yet (outbound
//! HTTP, DNS). They are linked with their real signatures so that
//! guests importing them deploy and serve; a guest that actually calls one
//! ends its request with a trap that names the call.

use wasmtime::{FuncType, Linker, ValType};

use super::{HostcallError, MODULE};
use crate::executor::Sandbox;

/// Name, number of `i32` parameters, whether it returns an `i32`.
const UNAVAILABLE: &[(&str, usize, bool)] = &[
    ("hostcall_req_create", 4, true),
    ("hostcall_req_set_header", 5, true),
    ("hostcall_req_set_body", 3, true),
    ("hostcall_req_send", 1, true),
    ("hostcall_req_send_async", 1, true),
    ("hostcall_pending_req_poll", 1, true),
    ("hostcall_pending_req_wait", 1, true),
    ("hostcall_pending_req_select", 3, true),
    ("hostcall_resp_get_response_code", 1, true),
    ("hostcall_resp_get_headers", 3, false),
    ("hostcall_resp_get_header", 5, false),
    ("hostcall_resp_get_body", 3, false),
    ("hostcall_dns_query_ip", 5, true),
    ("hostcall_dns_query_raw", 4, true),
];

pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    for &(name, params, returns) in UNAVAILABLE {
        let results: &[ValType] = if returns { &[ValType::I32] } else { &[] };
        let ty = FuncType::new(linker.engine(), vec![ValType::I32; params], results.iter().cloned());
        linker.func_new(MODULE, name, ty, move |_, _, _| Err(HostcallError::Unavailable(name).into()))?;
    }
    Ok(())
}
