//! A wasi:http handler. By path:
//! - `/…/echo`: answers with the request body, streamed back chunk by chunk
//!   as it arrives (a body larger than any one buffer), and the request's
//!   `x-*` headers;
//! - `/…/status/N`: answers status N with header `x-status: N`;
//! - `/…/fetch?url=URL`: sends `GET URL` through `wasi:http/outgoing-handler`
//!   and answers with the upstream's status and body, or 502 and the error;
//! - `/…/flood?url=URL`: sends 100 requests to URL, one after another; answers
//!   `sent=N refused=M`;
//! - `/…/big/N`: a body of N bytes, written 4 KiB at a time;
//! - `/…/trap`: panics before answering; `/…/trap-late`: after the first chunk;
//! - `/…/spin`: loops forever; `/…/grow`: allocates until memory runs out;
//! - `/…/no-answer`: returns without setting a response;
//! - anything else: `Hello, wasi:http!`.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};

struct Handler;

wasi::http::proxy::export!(Handler);

fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value.as_bytes()).unwrap();
    }
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).unwrap();
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    write_all(&outgoing, body);
    OutgoingBody::finish(outgoing, None).unwrap();
}

fn write_all(body: &OutgoingBody, bytes: &[u8]) {
    let stream = body.write().unwrap();
    for chunk in bytes.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
}

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let action = path.trim_start_matches('/').split_once('/').map_or("", |(_, rest)| rest);
        match action.split('/').collect::<Vec<_>>().as_slice() {
            ["echo"] => echo(request, out),
            ["status", code] => {
                let code: u16 = code.parse().unwrap_or(500);
                respond(out, code, &[("x-status", &code.to_string())], b"");
            }
            ["fetch"] => fetch(query.strip_prefix("url=").unwrap_or_default(), out),
            ["flood"] => flood(query.strip_prefix("url=").unwrap_or_default(), out),
            ["big", n] => {
                let n: usize = n.parse().unwrap_or(0);
                let response = OutgoingResponse::new(Fields::new());
                let outgoing = response.body().unwrap();
                ResponseOutparam::set(out, Ok(response));
                let stream = outgoing.write().unwrap();
                let chunk = vec![b'b'; 4096];
                let mut left = n;
                while left > 0 {
                    let now = left.min(chunk.len());
                    stream.blocking_write_and_flush(&chunk[..now]).unwrap();
                    left -= now;
                }
                drop(stream);
                OutgoingBody::finish(outgoing, None).unwrap();
            }
            ["trap"] => panic!("the guest gave up"),
            ["trap-late"] => {
                let response = OutgoingResponse::new(Fields::new());
                let outgoing = response.body().unwrap();
                ResponseOutparam::set(out, Ok(response));
                write_all(&outgoing, b"first chunk\n");
                panic!("the guest gave up mid-stream");
            }
            ["spin"] => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            ["grow"] => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                }
            }
            ["no-answer"] => drop(out),
            _ => respond(out, 200, &[("content-type", "text/plain")], b"Hello, wasi:http!\n"),
        }
    }
}

/// Streams the request body back as it arrives.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let fields = Fields::new();
    for (name, value) in request.headers().entries() {
        if name.starts_with("x-") {
            fields.append(&name, &value).unwrap();
        }
    }
    let response = OutgoingResponse::new(fields);
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let output = outgoing.write().unwrap();
    loop {
        match input.blocking_read(16 << 10) {
            // One blocking write takes at most 4096 bytes.
            Ok(chunk) => chunk.chunks(4096).for_each(|piece| output.blocking_write_and_flush(piece).unwrap()),
            Err(_) => break,
        }
    }
    drop(output);
    OutgoingBody::finish(outgoing, None).unwrap();
}

/// `GET url` as an outgoing request; `None` for a URL without a scheme.
fn get(url: &str) -> Option<OutgoingRequest> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).unwrap();
    request.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http })).unwrap();
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some(path)).unwrap();
    Some(request)
}

fn flood(url: &str, out: ResponseOutparam) {
    let (mut sent, mut refused, mut pending) = (0, 0, Vec::new());
    for _ in 0..100 {
        let Some(request) = get(url) else { return respond(out, 400, &[], b"no url\n") };
        match outgoing_handler::handle(request, None) {
            Ok(future) => {
                // Refusals of the host's come back through the future.
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(_))) => sent += 1,
                    _ => refused += 1,
                }
                pending.push(future);
            }
            Err(_) => refused += 1,
        }
    }
    respond(out, 200, &[], format!("sent={sent} refused={refused}\n").as_bytes());
}

fn fetch(url: &str, out: ResponseOutparam) {
    let Some(request) = get(url) else { return respond(out, 400, &[], b"no url\n") };
    let answer = outgoing_handler::handle(request, None).and_then(|future| {
        future.subscribe().block();
        future.get().expect("ready").expect("first get")
    });
    match answer {
        Ok(response) => {
            let status = response.status();
            let incoming = response.consume().unwrap();
            let input = incoming.stream().unwrap();
            let mut body = Vec::new();
            while let Ok(chunk) = input.blocking_read(16 << 10) {
                body.extend_from_slice(&chunk);
            }
            respond(out, status, &[], &body);
        }
        Err(error) => respond(out, 502, &[], format!("fetch failed: {error:?}\n").as_bytes()),
    }
}
