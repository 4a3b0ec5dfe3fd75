//! `hostcall_req_get_*`: the incoming request (handle 0) as the guest reads it.
//! The node sets `x-terrafirma-client-ip`, `fastly-client-ip` and
//! `x-fastly-client-ip` itself; a
//! client's own values for them are never shown.

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_list, read};
use super::{HostcallError, headers};
use crate::executor::{CallMode, GuestRequest, Sandbox};

/// Set by the node to the client's address, whatever the client sent.
/// Terrarium's throttle template reads `x-fastly-client-ip` first, so a
/// client must not be able to choose that one either.
const CLIENT_IP_HEADERS: [&str; 3] = ["x-terrafirma-client-ip", "fastly-client-ip", "x-fastly-client-ip"];

fn incoming<'a>(caller: &'a Caller<'_, Sandbox>, handle: i32, call: &'static str) -> Result<&'a GuestRequest, HostcallError> {
    match (&caller.data().session.request, handle) {
        (Some(request), 0) => Ok(request),
        _ => Err(HostcallError::BadHandle { call, handle }),
    }
}

/// Distinct header names, lower case, the node's client-ip headers included.
fn header_names(request: &GuestRequest) -> Vec<Bytes> {
    let mut names: Vec<Bytes> =
        headers::names(&request.headers).filter(|name| !CLIENT_IP_HEADERS.iter().any(|ip| ip.as_bytes() == name.as_ref())).collect();
    names.extend(CLIENT_IP_HEADERS.iter().map(|name| Bytes::from_static(name.as_bytes())));
    names
}

/// All values of one header, the client-ip headers as the node set them.
fn header_values(request: &GuestRequest, name: &[u8]) -> Vec<Bytes> {
    if CLIENT_IP_HEADERS.iter().any(|ip| ip.as_bytes().eq_ignore_ascii_case(name)) {
        return vec![Bytes::from(request.client_ip.to_string())];
    }
    headers::values(&request.headers, name)
}

/// A hostcall `(ptr_p, len_p, req)` handing one buffer of the request to the guest.
fn add_buffer(linker: &mut Linker<Sandbox>, mode: CallMode, call: &'static str, get: fn(&GuestRequest) -> Bytes) -> wasmtime::Result<()> {
    reentrant!(linker, mode, call, |caller, ptr_p: i32, len_p: i32, req: i32| {
        let bytes = get(incoming(&caller, req, call)?);
        hand_out(&mut caller, ptr_p, len_p, &bytes, call).await
    })?;
    Ok(())
}

pub fn add_to_linker(linker: &mut Linker<Sandbox>, mode: CallMode) -> wasmtime::Result<()> {
    add_buffer(linker, mode, "hostcall_req_get_method", |r| Bytes::copy_from_slice(r.method.as_str().as_bytes()))?;
    add_buffer(linker, mode, "hostcall_req_get_path", |r| Bytes::copy_from_slice(r.target().as_bytes()))?;
    add_buffer(linker, mode, "hostcall_req_get_body", |r| r.body.clone())?;
    reentrant!(linker, mode, "hostcall_req_get_headers", |caller, names_p: i32, count_p: i32, req: i32| {
        const CALL: &str = "hostcall_req_get_headers";
        let names = header_names(incoming(&caller, req, CALL)?);
        hand_out_list(&mut caller, names_p, count_p, &names, CALL).await
    })?;
    reentrant!(linker, mode, "hostcall_req_get_header", |caller, values_p: i32, count_p: i32, req: i32, name_ptr: i32, name_len: i32| {
        const CALL: &str = "hostcall_req_get_header";
        let name = read(&caller, name_ptr, name_len, CALL)?;
        let values = header_values(incoming(&caller, req, CALL)?, &name);
        hand_out_list(&mut caller, values_p, count_p, &values, CALL).await
    })?;
    Ok(())
}
