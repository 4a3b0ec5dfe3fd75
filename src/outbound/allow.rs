//! A site's `outbound_hosts` and the checks an outgoing URL must pass before
//! the node sends anything: `http` or `https`, a host, no userinfo, a sane
//! length, and a `host[:port]` on the list.

use std::str::FromStr;

use http::Uri;
use http::uri::{Authority, Scheme};

/// Longest URL a guest may ask for.
pub const MAX_URL_BYTES: usize = 8 << 10;

/// One entry: a host (any port) or a host and one port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: String,
    port: Option<u16>,
}

/// The hosts one site may reach. Empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

/// Why an outgoing URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("URL of {0} bytes is over the limit of {MAX_URL_BYTES}")]
    TooLong(usize),
    #[error("URL is not valid UTF-8")]
    NotUtf8,
    #[error("invalid URL: {0}")]
    Invalid(String),
    #[error("scheme of {0:?} is not http or https")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("URL carries userinfo (`user@`), which is refused")]
    Userinfo,
    #[error("{0} is not in the site's outbound_hosts")]
    NotAllowed(String),
}

/// The port written after the host, if any; `None` for one that is not a
/// port (`http` reads `host:99999` as `host` on the default port). The
/// authority carries no userinfo.
fn explicit_port(authority: &Authority) -> Option<Option<u16>> {
    match &authority.as_str()[authority.host().len()..] {
        "" => Some(None),
        rest => rest.strip_prefix(':')?.parse::<u16>().ok().filter(|&port| port != 0).map(Some),
    }
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl AllowList {
    /// Parses `outbound_hosts`: each entry `host`, `host:port`, `[v6]` or
    /// `[v6]:port`.
    pub fn parse<S: AsRef<str>>(hosts: &[S]) -> Result<AllowList, String> {
        let entries = hosts
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                let bad = || format!("outbound_hosts entry {entry:?} is not `host` or `host:port`");
                let authority = Authority::from_str(entry).map_err(|_| bad())?;
                if entry.contains('@') || authority.host().is_empty() {
                    return Err(bad());
                }
                let port = explicit_port(&authority).ok_or_else(bad)?;
                Ok(Entry { host: normalize(authority.host()), port })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `host` (as a URI spells it: IPv6 in brackets) may be reached on `port`.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = normalize(host);
        self.entries.iter().any(|e| e.host == host && e.port.is_none_or(|p| p == port))
    }

    /// Whether a DNS name may be looked up: it is the host of an entry.
    pub fn permits_name(&self, name: &str) -> bool {
        let name = normalize(name);
        let bracketed = format!("[{name}]");
        self.entries.iter().any(|e| e.host == name || e.host == bracketed)
    }

    /// Parses and checks a URL a guest wants to send a request to.
    pub fn check_url(&self, url: &[u8]) -> Result<Uri, UrlError> {
        if url.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong(url.len()));
        }
        let text = std::str::from_utf8(url).map_err(|_| UrlError::NotUtf8)?;
        let uri = Uri::from_str(text).map_err(|e| UrlError::Invalid(e.to_string()))?;
        let default_port = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => 80,
            Some(s) if *s == Scheme::HTTPS => 443,
            Some(other) => return Err(UrlError::Scheme(other.to_string())),
            None => return Err(UrlError::Scheme(String::new())),
        };
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::Userinfo);
        }
        if authority.host().is_empty() {
            return Err(UrlError::NoHost);
        }
        let port = explicit_port(authority).ok_or_else(|| UrlError::Invalid(format!("bad port in {authority}")))?.unwrap_or(default_port);
        if !self.permits(authority.host(), port) {
            return Err(UrlError::NotAllowed(format!("{}:{port}", authority.host())));
        }
        Ok(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(hosts: &[&str]) -> AllowList {
        AllowList::parse(hosts).unwrap()
    }

    #[test]
    fn entries_match_host_and_port() {
        let allow = list(&["api.example.com", "127.0.0.1:9000", "[::1]", "Upper.Example."]);
        assert!(allow.check_url(b"https://api.example.com/v1?x=1").is_ok());
        assert!(allow.check_url(b"http://API.example.com:8080/").is_ok(), "a bare host allows any port");
        assert!(allow.check_url(b"http://127.0.0.1:9000/").is_ok());
        assert!(allow.check_url(b"http://[::1]:1234/").is_ok());
        assert!(allow.check_url(b"http://upper.example/").is_ok());
        assert!(matches!(allow.check_url(b"http://127.0.0.1:9001/"), Err(UrlError::NotAllowed(_))));
        assert!(matches!(allow.check_url(b"http://127.0.0.1/"), Err(UrlError::NotAllowed(_))), "port 80 is not 9000");
        assert!(matches!(allow.check_url(b"http://evil.example.com/"), Err(UrlError::NotAllowed(_))));
        assert!(matches!(allow.check_url(b"http://api.example.com.evil.net/"), Err(UrlError::NotAllowed(_))));
        assert!(allow.permits_name("api.example.com."));
        assert!(allow.permits_name("::1"));
        assert!(!allow.permits_name("example.com"));
    }

    #[test]
    fn hostile_urls_are_refused() {
        let allow = list(&["127.0.0.1", "localhost"]);
        assert!(matches!(allow.check_url(b"file:///etc/passwd"), Err(UrlError::Scheme(_) | UrlError::Invalid(_))));
        assert!(matches!(allow.check_url(b"ftp://localhost/"), Err(UrlError::Scheme(_))));
        assert!(matches!(allow.check_url(b"/relative/path"), Err(UrlError::Scheme(_))));
        assert!(allow.check_url(b"http://").is_err());
        assert!(allow.check_url(b"http:///path").is_err());
        assert!(matches!(allow.check_url(b"http://user:pw@localhost/"), Err(UrlError::Userinfo | UrlError::Invalid(_))));
        assert!(matches!(allow.check_url(b"http://localhost@evil.net/"), Err(UrlError::Userinfo | UrlError::Invalid(_))));
        assert!(matches!(allow.check_url(b"http://\xff/"), Err(UrlError::NotUtf8)));
        assert!(matches!(allow.check_url(b"http://localhost:99999/"), Err(UrlError::Invalid(_))));
        assert!(matches!(allow.check_url(b"http://localhost:0/"), Err(UrlError::Invalid(_))));
        let long = format!("http://localhost/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(allow.check_url(long.as_bytes()), Err(UrlError::TooLong(_))));
        assert!(matches!(AllowList::default().check_url(b"http://localhost/"), Err(UrlError::NotAllowed(_))));
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in ["", "http://x.com", "x.com/path", "u@x.com", "x.com:0", "x.com:99999", "a b"] {
            assert!(AllowList::parse(&[entry]).is_err(), "{entry:?}");
        }
    }
}
