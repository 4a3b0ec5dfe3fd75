//! hello: every request gets `200` and `Hello World!`.
use terrafirma_guest::http::StatusCode;
use terrafirma_guest::{Request, Response, text};

fn hello(_request: Request) -> Response {
    text(StatusCode::OK, "Hello World!\n")
}

terrafirma_guest::main!(hello);
