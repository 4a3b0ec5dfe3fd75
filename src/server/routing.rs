//! Host → site → module. Knows nothing of guest interfaces.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::Config;
use crate::modules::{Deployed, Registry};
use crate::names::{DEFAULT_SITE, INDEX_MODULE};

pub struct Route {
    pub module: Arc<Deployed>,
    /// Bytes of the path that name the module (0 for the `index` module).
    pub script_len: usize,
}

/// The site a `Host` header selects: port removed, lower-cased; hosts that
/// are no site fall back to `_default`.
pub fn site_for<'a>(registry: &Registry, config: &Config, host: Option<&'a str>) -> Cow<'a, str> {
    let Some(host) = host.map(strip_port).filter(|h| !h.is_empty()) else { return Cow::Borrowed(DEFAULT_SITE) };
    let host: Cow<str> =
        if host.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(host.to_ascii_lowercase()) } else { Cow::Borrowed(host) };
    if registry.has_site(&host) || config.sites.contains_key(host.as_ref()) { host } else { Cow::Borrowed(DEFAULT_SITE) }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        return rest.split(']').next().unwrap_or(rest);
    }
    // A byte loop, not `rsplit_once`: its searcher costs more than the
    // dozen bytes of a host (this is every request).
    host.bytes().rposition(|b| b == b':').map_or(host, |colon| &host[..colon])
}

/// The module serving `path` on the site `host` selects: the first path
/// segment (with or without `.wasm`), else the site's `index` module.
pub fn resolve(registry: &Registry, config: &Config, host: Option<&str>, path: &str) -> Option<Route> {
    let site = site_for(registry, config, host);
    let module = module_segment(path).and_then(|name| registry.get(&site, name)).or_else(|| registry.get(&site, INDEX_MODULE))?;
    let script_len = script_name_len(path, &module.name);
    Some(Route { module, script_len })
}

/// How many leading bytes of `path` name the module `name` that serves it
/// (CGI's `SCRIPT_NAME`): its first segment when that names the module,
/// else none, as for a site's `index` module. The node's routing and
/// `terrafirma run` agree through this.
pub fn script_name_len(path: &str, name: &str) -> usize {
    if module_segment(path) == Some(name) { 1 + first_segment(path).len() } else { 0 }
}

fn first_segment(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    // A byte loop, not `split`: see `strip_port`.
    path.bytes().position(|b| b == b'/').map_or(path, |slash| &path[..slash])
}

/// The module name the path's first segment gives, `.wasm` removed.
pub fn module_segment(path: &str) -> Option<&str> {
    let segment = first_segment(path);
    Some(segment.strip_suffix(".wasm").unwrap_or(segment)).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("example.com:"), "example.com");
        assert_eq!(strip_port("a:b:80"), "a:b");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn the_first_segment_is_up_to_the_second_slash() {
        for (path, segment) in [("/hello/a/b", "hello"), ("/hello", "hello"), ("hello/a", "hello"), ("/", ""), ("", ""), ("//a", "")] {
            assert_eq!(first_segment(path), segment, "{path:?}");
        }
    }

    #[test]
    fn script_name_is_the_segment_that_names_the_module() {
        assert_eq!(script_name_len("/hello.wasm/a/b", "hello"), "/hello.wasm".len());
        assert_eq!(script_name_len("/hello/a", "hello"), "/hello".len());
        assert_eq!(script_name_len("/index/a", "index"), "/index".len());
        assert_eq!(script_name_len("/compare/a/to/b", "index"), 0);
        assert_eq!(script_name_len("/", "index"), 0);
        assert_eq!(script_name_len("/other/x", "hello"), 0);
    }

    #[test]
    fn unknown_hosts_use_the_default_site() {
        let registry = Registry::default();
        let config = Config::default();
        assert_eq!(site_for(&registry, &config, Some("Nowhere.test:1")), DEFAULT_SITE);
        assert_eq!(site_for(&registry, &config, None), DEFAULT_SITE);
    }
}
