//! `hostcall_dns_query_ip` and `hostcall_dns_query_raw`: lookups of names on
//! the site's allow-list, within the request's wall-clock limit. A refused
//! or failed lookup answers 0 with the pointer left 0, and is logged.

use std::net::IpAddr;

use tokio::time::{Instant, timeout_at};
use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_list, hand_out_nothing, read};
use super::{HostcallError, HostcallResult, KV_NOT_SAVED, TerrafirmaView};
use crate::outbound::{DnsError, MAX_QUERY_BYTES, SiteNet};
use crate::sandbox::DeadlineExceeded;

/// What a lookup needs, taken out of the store before awaiting: the
/// site's network and the deadline. A query goes out only once the KV
/// writes the guest may have seen are durable (a name can carry what the
/// guest read).
fn context<T: TerrafirmaView>(caller: &mut Caller<'_, T>) -> HostcallResult<(SiteNet, Instant)> {
    let deadline = Instant::from_std(caller.data().deadline());
    let session = caller.data_mut().session_mut();
    let net = session.outbound().net().ok_or_else(|| HostcallError::refused("DNS is not available here"))?;
    session.flush_kv().map_err(|_| HostcallError::refused(KV_NOT_SAVED))?;
    Ok((net, deadline))
}

/// Awaits a lookup; past the deadline the request ends with a timeout.
async fn within<R>(deadline: Instant, lookup: impl Future<Output = Result<R, DnsError>>) -> HostcallResult<R> {
    timeout_at(deadline, lookup).await.map_err(|_| DeadlineExceeded)?.map_err(HostcallError::refused)
}

async fn hostcall_dns_query_ip<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    ptr_p: i32,
    count_p: i32,
    name_ptr: i32,
    name_len: i32,
    ipv6: i32,
) -> HostcallResult<bool> {
    let name = read(caller, name_ptr, name_len)?;
    hand_out_nothing(caller, ptr_p, count_p)?;
    let name = String::from_utf8(name).map_err(|_| HostcallError::refused("name is not valid UTF-8"))?;
    let (net, deadline) = context(caller)?;
    let addresses = within(deadline, net.net.resolver.query_ip(&net.allow, &name, ipv6 != 0)).await?;
    if addresses.is_empty() {
        return Err(HostcallError::refused(format!("{name} has no {} address", if ipv6 != 0 { "IPv6" } else { "IPv4" })));
    }
    let octets: Vec<Vec<u8>> = addresses
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        })
        .collect();
    hand_out_list(caller, ptr_p, count_p, &octets).await?;
    Ok(true)
}

async fn hostcall_dns_query_raw<T: TerrafirmaView>(
    caller: &mut Caller<'_, T>,
    ptr_p: i32,
    len_p: i32,
    query_ptr: i32,
    query_len: i32,
) -> HostcallResult<bool> {
    hand_out_nothing(caller, ptr_p, len_p)?;
    if usize::try_from(query_len).is_ok_and(|len| len > MAX_QUERY_BYTES) {
        return Err(HostcallError::refused(format!("query of {query_len} bytes is over the limit of {MAX_QUERY_BYTES}")));
    }
    let query = read(caller, query_ptr, query_len)?;
    let (net, deadline) = context(caller)?;
    let answer = within(deadline, net.net.resolver.query_raw(&net.allow, &query)).await?;
    hand_out(caller, ptr_p, len_p, &answer).await?;
    Ok(true)
}

pub fn add_to_linker<T: TerrafirmaView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    waiting!(linker, hostcall_dns_query_ip(ptr_p: i32, count_p: i32, name_ptr: i32, name_len: i32, ipv6: i32));
    waiting!(linker, hostcall_dns_query_raw(ptr_p: i32, len_p: i32, query_ptr: i32, query_len: i32));
    Ok(())
}
