//! grep: the lines of the request body that match the regular expression
//! in the query (`?re=PATTERN`, percent-encoded), as JSON: line number and
//! text of each match. The full `regex` crate with its Unicode tables and
//! `serde_json` make this a guest of about a megabyte, the size of a real
//! handler with a few dependencies.
//!
//!     $ curl -d $'apple\nbanana\ncherry' 'http://127.0.0.1:8080/grep?re=an+'
//!     {"pattern":"an+","matches":[{"line":2,"text":"banana"}]}
use http::StatusCode;
use terrafirma_guest::{Request, Response, http, text};

fn grep(request: Request) -> Response {
    let query = request.uri().query().unwrap_or_default();
    let Some(pattern) = query.split('&').find_map(|pair| pair.strip_prefix("re=")) else {
        return text(StatusCode::BAD_REQUEST, "grep: give a pattern as ?re=PATTERN\n");
    };
    let pattern = percent_decode(pattern);
    let regex = match regex::Regex::new(&pattern) {
        Ok(regex) => regex,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("grep: {error}\n")),
    };
    let body = String::from_utf8_lossy(request.body());
    let matches: Vec<serde_json::Value> = body
        .lines()
        .enumerate()
        .filter(|(_, line)| regex.is_match(line))
        .map(|(index, line)| serde_json::json!({ "line": index + 1, "text": line }))
        .collect();
    let mut answer = serde_json::to_vec(&serde_json::json!({ "pattern": pattern, "matches": matches })).unwrap_or_default();
    answer.push(b'\n');
    let mut response = Response::new(answer);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// `%XX` escapes and `+` as a space.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

terrafirma_guest::main!(grep);
