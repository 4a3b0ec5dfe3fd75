//! `hostcall_resp_set_*`: the outgoing response (handle 0). Bad handles,
//! codes, header names or values answer `Invalid`; bad pointers trap, and so
//! does a body over the response limit.

use bytes::Bytes;
use http::StatusCode;
use wasmtime::{Caller, Linker};

use super::memory::{read, read_header};
use super::{GuestTrap, HostcallError, HostcallResult, HostcallStatus, TerrafirmaView, headers};

fn hostcall_resp_set_response_code<T: TerrafirmaView>(caller: &mut Caller<'_, T>, resp: i32, code: i32) -> HostcallResult<HostcallStatus> {
    let status = u16::try_from(code).ok().filter(|code| (100..=999).contains(code)).and_then(|code| StatusCode::from_u16(code).ok());
    let (0, Some(status)) = (resp, status) else { return Err(HostcallError::Invalid) };
    caller.data_mut().session_mut().response_mut().status = status;
    Ok(HostcallStatus::Ok)
}

fn hostcall_resp_set_header<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    resp: i32,
    name_ptr: i32,
    name_len: i32,
    values_ptr: i32,
    values_count: i32,
) -> HostcallResult<HostcallStatus> {
    let (name, values) = read_header(caller, (name_ptr, name_len), (values_ptr, values_count))?;
    if resp != 0 {
        return Err(HostcallError::Invalid);
    }
    Ok(headers::set(&mut caller.data_mut().session_mut().response_mut().headers, &name, values))
}

fn hostcall_resp_set_body<T: TerrafirmaView>(caller: &mut Caller<'_, T>, resp: i32, ptr: i32, len: i32) -> HostcallResult<HostcallStatus> {
    let body = read(caller, ptr, len)?;
    if resp != 0 {
        return Err(HostcallError::Invalid);
    }
    let session = caller.data_mut().session_mut();
    let limit = session.limits().max_response_bytes;
    if body.len() > limit {
        return Err(GuestTrap::ResponseTooLarge { len: body.len(), limit }.into());
    }
    session.response_mut().body = Bytes::from(body);
    Ok(HostcallStatus::Ok)
}

pub fn add_to_linker<T: TerrafirmaView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    plain!(linker, hostcall_resp_set_response_code(resp: i32, code: i32));
    plain!(linker, hostcall_resp_set_header(resp: i32, name_ptr: i32, name_len: i32, values_ptr: i32, values_count: i32));
    plain!(linker, hostcall_resp_set_body(resp: i32, ptr: i32, len: i32));
    Ok(())
}
