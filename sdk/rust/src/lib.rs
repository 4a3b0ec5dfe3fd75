//! Guest SDK for Terrafirma (and Terrarium) HTTP handlers: WebAssembly
//! modules that export `run` and talk to the node through the
//! `env.hostcall_*` functions of the guest ABI.
//!
//! Build a guest as a `cdylib` for `wasm32-unknown-unknown` or
//! `wasm32-wasip1`:
//!
//! ```no_run
//! use terrafirma_guest::{Request, Response};
//!
//! fn hello(request: Request) -> Response {
//!     Response::new(format!("Hello from {}\n", request.uri()).into_bytes())
//! }
//!
//! terrafirma_guest::main!(hello);
//! ```
//!
//! The handler gets the incoming request as [`Request`] (an
//! `http::Request<Vec<u8>>`) and returns a [`Response`], any
//! `http::Response<B>` with `B: Into<Vec<u8>>`, or a `Result` of one (an
//! error becomes a `500`). [`kv`], [`client`], [`dns`] and [`time`] wrap
//! the other hostcalls; [`sys`] has all of them raw.
//!
//! On entry the SDK registers its allocator with `hostcall_init_mm`; what
//! the host hands out is copied into Rust values and freed with its real
//! size ([`mem`]). The ABI is the same as the 2018 Terrarium's and the
//! 2019 Terrafirma's, so these guests run on hosts that followed them.

pub mod client;
pub mod dns;
mod handler;
pub mod kv;
pub mod mem;
pub mod sys;
pub mod time;

pub use handler::{IntoResponse, Request, Response, incoming, run, send, text};
pub use http;

/// Defines the guest's exported `run` so that it serves each request with
/// `handler` (a `fn(Request) -> impl IntoResponse`); see [`run`].
#[macro_export]
macro_rules! main {
    ($handler:expr) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn run() {
            $crate::run($handler)
        }
    };
}

/// Writes a line to the site's log.
pub fn debug(message: &str) {
    // SAFETY: a valid buffer, read by the host.
    unsafe { sys::hostcall_debug(message.as_ptr(), message.len()) }
}

/// 64 cryptographically secure random bits.
pub fn random_u64() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::hostcall_rng_next_u64() }
}
