//! Header lists as the ABI hands them out and takes them in: distinct
//! lower-case names, all values of one name, and "replace this header with
//! these values" for the messages a guest builds.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::HostcallStatus;

/// Most header lines a guest may put on one message it builds.
pub const MAX_HEADERS: usize = 1000;

/// Distinct header names, lower case.
pub fn names(headers: &HeaderMap) -> impl Iterator<Item = Bytes> + '_ {
    headers.keys().map(|name| Bytes::copy_from_slice(name.as_str().as_bytes()))
}

/// All values of one header; the name is matched case-insensitively. An
/// invalid name has no values.
pub fn values(headers: &HeaderMap, name: &[u8]) -> Vec<Bytes> {
    let Ok(name) = HeaderName::from_bytes(name) else { return Vec::new() };
    headers.get_all(&name).iter().map(|value| Bytes::copy_from_slice(value.as_bytes())).collect()
}

/// Replaces header `name` with `values` (none: removes it). `Invalid`, and
/// nothing changed, for a bad name or value or past `MAX_HEADERS` lines.
pub fn set(headers: &mut HeaderMap, name: &[u8], values: Vec<Vec<u8>>) -> HostcallStatus {
    let Ok(name) = HeaderName::from_bytes(name) else { return HostcallStatus::Invalid };
    let Ok(values) = values.into_iter().map(HeaderValue::try_from).collect::<Result<Vec<_>, _>>() else {
        return HostcallStatus::Invalid;
    };
    let kept = headers.len() - headers.get_all(&name).iter().count();
    if kept + values.len() > MAX_HEADERS {
        return HostcallStatus::Invalid;
    }
    headers.remove(&name);
    for value in values {
        headers.append(name.clone(), value);
    }
    HostcallStatus::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_and_refuses_bad_input_without_changes() {
        let mut headers = HeaderMap::new();
        assert_eq!(set(&mut headers, b"X-A", vec![b"1".to_vec(), b"2".to_vec()]), HostcallStatus::Ok);
        assert_eq!(values(&headers, b"x-a"), [Bytes::from("1"), Bytes::from("2")]);
        assert_eq!(set(&mut headers, b"x-a", vec![b"3".to_vec()]), HostcallStatus::Ok);
        assert_eq!(values(&headers, b"X-A"), [Bytes::from("3")]);
        assert_eq!(set(&mut headers, b"bad name", vec![b"v".to_vec()]), HostcallStatus::Invalid);
        assert_eq!(set(&mut headers, b"x-a", vec![b"new\nline".to_vec()]), HostcallStatus::Invalid);
        assert_eq!(values(&headers, b"x-a"), [Bytes::from("3")], "unchanged");
        let many = vec![b"v".to_vec(); MAX_HEADERS + 1];
        assert_eq!(set(&mut headers, b"x-b", many), HostcallStatus::Invalid);
        assert_eq!(set(&mut headers, b"x-a", vec![]), HostcallStatus::Ok);
        assert!(headers.is_empty());
        assert_eq!(names(&headers).count(), 0);
    }
}
