//! DNS through the node's resolver (`hostcall_dns_query_*`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::mem::{out_bytes, out_list};
use crate::sys;

/// The IPv4 (or, with `ipv6`, IPv6) addresses of `name`; `None` if the
/// lookup failed.
pub fn query_ip(name: &str, ipv6: bool) -> Option<Vec<IpAddr>> {
    let mut ok = false;
    // SAFETY: a valid buffer; the host writes blocks from our allocator.
    let answers = out_list(|p, c| ok = unsafe { sys::hostcall_dns_query_ip(p, c, name.as_ptr(), name.len(), i32::from(ipv6)) } != 0);
    ok.then(|| answers.iter().filter_map(|bytes| address(bytes)).collect())
}

/// Sends a DNS query in wire format and returns the answer in wire format;
/// `None` if the query failed.
pub fn query_raw(query: &[u8]) -> Option<Vec<u8>> {
    let mut ok = false;
    // SAFETY: a valid buffer; the host writes a block from our allocator.
    let answer = out_bytes(|p, l| ok = unsafe { sys::hostcall_dns_query_raw(p, l, query.as_ptr(), query.len()) } != 0);
    ok.then_some(answer)
}

/// A 4- or 16-byte address; anything else is skipped.
fn address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_length() {
        assert_eq!(address(&[127, 0, 0, 1]), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(address(&v6), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(address(&[1, 2, 3]), None);
    }
}
