//! Hostcalls that call back into the guest (its allocator, to hand it a
//! buffer) are written once, as an `async` body, and registered for either
//! call mode by `reentrant!`:
//! - on fibers, as an async host function: the body awaits the allocator,
//!   which wasmtime runs on a fiber of its own (`call_async`);
//! - called directly, as a plain host function that runs the same body to
//!   completion on the spot (`finish_now`): the allocator is then called
//!   synchronously, so the body never waits.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a hostcall body that cannot wait (see the module doc) to its end.
pub(super) fn finish_now<R>(body: impl Future<Output = wasmtime::Result<R>>) -> wasmtime::Result<R> {
    match pin!(body).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        // Only hostcalls that cannot wait are linked for direct calls.
        Poll::Pending => wasmtime::bail!("internal error: a directly called hostcall tried to wait"),
    }
}

/// `reentrant!(linker, mode, "hostcall_name", |caller, a: i32, b: i32| { body })`
/// registers `body` (an async block's contents, returning
/// `wasmtime::Result<_>`) as the hostcall `env.hostcall_name` for `mode`.
macro_rules! reentrant {
    ($linker:expr, $mode:expr, $name:expr, |$caller:ident $(, $arg:ident : $ty:ty)*| $body:block) => {
        match $mode {
            $crate::executor::CallMode::Fiber => $linker.func_wrap_async(
                $crate::abi::terrafirma::MODULE,
                $name,
                move |mut $caller: ::wasmtime::Caller<'_, $crate::executor::Sandbox>, ($($arg,)*): ($($ty,)*)| {
                    Box::new(async move $body)
                },
            ),
            $crate::executor::CallMode::Direct => $linker.func_wrap(
                $crate::abi::terrafirma::MODULE,
                $name,
                move |mut $caller: ::wasmtime::Caller<'_, $crate::executor::Sandbox>, $($arg: $ty),*| {
                    $crate::abi::terrafirma::reentrant::finish_now(async move $body)
                },
            ),
        }
    };
}
