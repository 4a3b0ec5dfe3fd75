//! `hostcall_dns_query_ip` and `hostcall_dns_query_raw`: lookups of names on
//! the site's allow-list, within the request's wall-clock limit. A refused
//! or failed lookup answers 0 with the pointer left 0, and is logged.

use tokio::time::{Instant, timeout_at};
use wasmtime::{Caller, Linker};

use super::memory::{hand_out, hand_out_list, hand_out_nothing, read};
use super::{KV_NOT_SAVED, MODULE, deadline, log_failure};
use crate::executor::{DeadlineExceeded, Sandbox};
use crate::outbound::{DnsError, MAX_QUERY_BYTES, SiteNet};

/// Writes the failure result (pointer and length 0), logs the reason, answers 0.
fn fail(
    caller: &mut Caller<'_, Sandbox>,
    call: &'static str,
    ptr_p: i32,
    len_p: i32,
    reason: impl std::fmt::Display,
) -> wasmtime::Result<i32> {
    hand_out_nothing(caller, ptr_p, len_p, call)?;
    log_failure(caller, call, reason);
    Ok(0)
}

/// What a lookup needs, taken out of the store before awaiting: the
/// site's network and the deadline (`Err`: why there is no lookup). A query
/// goes out only once the KV writes the guest may have seen are durable (a
/// name can carry what the guest read).
fn context(caller: &mut Caller<'_, Sandbox>) -> Result<(SiteNet, Instant), &'static str> {
    let session = &mut caller.data_mut().session;
    let net = session.outbound.net.clone().ok_or(UNAVAILABLE)?;
    session.flush_kv().map_err(|_| KV_NOT_SAVED)?;
    Ok((net, deadline(caller)))
}

/// Awaits a lookup; past the deadline the request ends with a timeout.
async fn within<T>(deadline: Instant, lookup: impl Future<Output = Result<T, DnsError>>) -> wasmtime::Result<Result<T, DnsError>> {
    timeout_at(deadline, lookup).await.map_err(|_| DeadlineExceeded.into())
}

const UNAVAILABLE: &str = "DNS is not available here";

pub fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        MODULE,
        "hostcall_dns_query_ip",
        |mut caller: Caller<'_, Sandbox>, (ptr_p, count_p, name_ptr, name_len, ipv6): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                const CALL: &str = "hostcall_dns_query_ip";
                let name = read(&caller, name_ptr, name_len, CALL)?;
                let Ok(name) = String::from_utf8(name) else {
                    return fail(&mut caller, CALL, ptr_p, count_p, "name is not valid UTF-8");
                };
                let (net, deadline) = match context(&mut caller) {
                    Ok(context) => context,
                    Err(reason) => return fail(&mut caller, CALL, ptr_p, count_p, reason),
                };
                match within(deadline, net.net.resolver.query_ip(&net.allow, &name, ipv6 != 0)).await? {
                    Ok(addresses) if !addresses.is_empty() => {
                        let octets: Vec<Vec<u8>> = addresses
                            .iter()
                            .map(|ip| match ip {
                                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
                            })
                            .collect();
                        hand_out_list(&mut caller, ptr_p, count_p, &octets, CALL).await?;
                        Ok(1)
                    }
                    Ok(_) => fail(
                        &mut caller,
                        CALL,
                        ptr_p,
                        count_p,
                        format!("{name} has no {} address", if ipv6 != 0 { "IPv6" } else { "IPv4" }),
                    ),
                    Err(reason) => fail(&mut caller, CALL, ptr_p, count_p, reason),
                }
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "hostcall_dns_query_raw",
        |mut caller: Caller<'_, Sandbox>, (ptr_p, len_p, query_ptr, query_len): (i32, i32, i32, i32)| {
            Box::new(async move {
                const CALL: &str = "hostcall_dns_query_raw";
                if usize::try_from(query_len).is_ok_and(|len| len > MAX_QUERY_BYTES) {
                    return fail(
                        &mut caller,
                        CALL,
                        ptr_p,
                        len_p,
                        format!("query of {query_len} bytes is over the limit of {MAX_QUERY_BYTES}"),
                    );
                }
                let query = read(&caller, query_ptr, query_len, CALL)?;
                let (net, deadline) = match context(&mut caller) {
                    Ok(context) => context,
                    Err(reason) => return fail(&mut caller, CALL, ptr_p, len_p, reason),
                };
                match within(deadline, net.net.resolver.query_raw(&net.allow, &query)).await? {
                    Ok(answer) => {
                        hand_out(&mut caller, ptr_p, len_p, &answer, CALL).await?;
                        Ok(1)
                    }
                    Err(reason) => fail(&mut caller, CALL, ptr_p, len_p, reason),
                }
            })
        },
    )?;
    Ok(())
}
