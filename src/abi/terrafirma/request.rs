//! `hostcall_req_get_*`: the incoming request (handle 0) as the guest reads
//! it. Its client-address headers are the node's (`GuestRequest::client_ip_headers`).

use bytes::Bytes;
use wasmtime::Caller;

use super::memory::{hand_out, hand_out_list, read};
use super::{GuestTrap, HostcallResult, TerrafirmaView, headers};
use crate::messages::{CLIENT_IP_HEADERS, GuestRequest};
use crate::sandbox::CallMode;

fn incoming<'a, T: TerrafirmaView>(caller: &'a Caller<'_, T>, handle: i32) -> HostcallResult<&'a GuestRequest> {
    Ok(caller.data().session().request(handle).ok_or(GuestTrap::BadHandle(handle))?)
}

async fn hostcall_req_get_method<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr_p: i32, len_p: i32, req: i32) -> HostcallResult<()> {
    let method = Bytes::copy_from_slice(incoming(caller, req)?.method.as_str().as_bytes());
    hand_out(caller, ptr_p, len_p, &method).await
}

async fn hostcall_req_get_path<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr_p: i32, len_p: i32, req: i32) -> HostcallResult<()> {
    let target = Bytes::copy_from_slice(incoming(caller, req)?.target().as_bytes());
    hand_out(caller, ptr_p, len_p, &target).await
}

async fn hostcall_req_get_body<T: TerrafirmaView>(caller: &mut Caller<'_, T>, ptr_p: i32, len_p: i32, req: i32) -> HostcallResult<()> {
    let body = incoming(caller, req)?.body.clone();
    hand_out(caller, ptr_p, len_p, &body).await
}

async fn hostcall_req_get_headers<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    names_p: i32,
    count_p: i32,
    req: i32,
) -> HostcallResult<()> {
    let request = incoming(caller, req)?;
    let node_set = CLIENT_IP_HEADERS.iter().map(|name| Bytes::from_static(name.as_str().as_bytes()));
    let names: Vec<Bytes> = headers::names(&request.headers).chain(node_set).collect();
    hand_out_list(caller, names_p, count_p, &names).await
}

async fn hostcall_req_get_header<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    values_p: i32,
    count_p: i32,
    req: i32,
    name_ptr: i32,
    name_len: i32,
) -> HostcallResult<()> {
    let name = read(caller, name_ptr, name_len)?;
    let request = incoming(caller, req)?;
    let node_set = CLIENT_IP_HEADERS.iter().any(|node| node.as_str().as_bytes().eq_ignore_ascii_case(&name));
    let values = if node_set { vec![Bytes::from(request.client_ip.to_string())] } else { headers::values(&request.headers, &name) };
    hand_out_list(caller, values_p, count_p, &values).await
}

pub fn add_to_linker<T: TerrafirmaView>(linker: &mut wasmtime::Linker<T>, mode: CallMode) -> wasmtime::Result<()> {
    reentrant!(linker, mode, hostcall_req_get_method(ptr_p: i32, len_p: i32, req: i32));
    reentrant!(linker, mode, hostcall_req_get_path(ptr_p: i32, len_p: i32, req: i32));
    reentrant!(linker, mode, hostcall_req_get_body(ptr_p: i32, len_p: i32, req: i32));
    reentrant!(linker, mode, hostcall_req_get_headers(names_p: i32, count_p: i32, req: i32));
    reentrant!(linker, mode, hostcall_req_get_header(values_p: i32, count_p: i32, req: i32, name_ptr: i32, name_len: i32));
    Ok(())
}
