//! Names of sites and modules: what is valid, and the two that mean
//! something to routing.

/// The site that serves hosts no other site matches.
pub const DEFAULT_SITE: &str = "_default";

/// The module that serves a site's root and unknown first segments.
pub const INDEX_MODULE: &str = "index";

/// A site is a lower-case host name (or `_default`).
pub fn valid_site_name(name: &str) -> bool {
    name == DEFAULT_SITE
        || (!name.is_empty()
            && name.len() <= 253
            && !name.starts_with('.')
            && !name.contains("..")
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'))
}

/// A module name is one path segment without `.wasm`: letters, digits, `_`, `-`.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_site_name("example.com"));
        assert!(valid_site_name("_default"));
        assert!(!valid_site_name("../etc"));
        assert!(!valid_site_name("Example.com"));
        assert!(!valid_site_name("a/b"));
        assert!(valid_module_name("hello_2-x"));
        assert!(!valid_module_name("hello.wasm"));
        assert!(!valid_module_name(".."));
        assert!(!valid_module_name(""));
    }
}
