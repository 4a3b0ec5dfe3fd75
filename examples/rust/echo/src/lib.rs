//! echo: the request's method and target on the first line, then its body.
//!
//!     $ curl -d 'some data' 'http://127.0.0.1:8080/echo/a/b?x=1'
//!     POST /echo/a/b?x=1
//!     some data
use terrafirma_guest::{Request, Response};

fn echo(request: Request) -> Response {
    let mut body = format!("{} {}\n", request.method(), request.uri()).into_bytes();
    body.extend_from_slice(request.body());
    Response::new(body)
}

terrafirma_guest::main!(echo);
