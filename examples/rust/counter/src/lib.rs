//! counter: adds one to a counter in the site's KV store on each request
//! and answers with the new value. `/counter` counts under the key `count`,
//! `/counter/NAME` under `count/NAME` (the query is ignored).
//!
//! The read and the write are two hostcalls: two requests at the same
//! moment may both write the same value.
use terrafirma_guest::http::StatusCode;
use terrafirma_guest::{Request, Response, kv, text};

/// `count` followed by the path after its first segment (the module name).
fn key(path: &str) -> String {
    let after_slash = path.strip_prefix('/').unwrap_or(path);
    let rest = after_slash.find('/').map_or("", |at| &after_slash[at..]);
    format!("count{rest}")
}

fn counter(request: Request) -> Response {
    let key = key(request.uri().path());
    let count = kv::get(&key).and_then(|value| String::from_utf8(value).ok()?.parse::<u64>().ok()).unwrap_or(0) + 1;
    kv::insert(&key, count.to_string());
    text(StatusCode::OK, format!("{count}\n"))
}

terrafirma_guest::main!(counter);
