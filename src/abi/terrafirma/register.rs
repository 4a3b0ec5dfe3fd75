//! The one place where hostcall results become ABI values. A hostcall is a
//! function named as the guest imports it, returning
//! `Result<_, HostcallError>`; the macros below register it under that name
//! and pass its result through `finish`, which logs refusals, answers the
//! call's failure value (`-1`, `Invalid`, `0`) and turns guest mistakes into
//! traps that name the hostcall.
//!
//! Hostcalls that call back into the guest (its allocator, to hand it a
//! buffer) are `async` functions, registered for either call mode by
//! `reentrant!`: on fibers as async host functions (the allocator runs on
//! the guest's fiber, `call_async`); called directly as plain host functions
//! that run the same body to completion on the spot (`finish_now`), the
//! allocator then being called synchronously, so the body never waits.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::Caller;

use super::{GuestTrap, Handle, HostcallError, HostcallStatus, TerrafirmaView};

/// A guest mistake, with the hostcall that found it: the trap a request ends
/// with (`Display`: `hostcall_x: what went wrong`).
#[derive(Debug, thiserror::Error)]
#[error("{call}: {trap}")]
pub struct HostcallTrap {
    pub call: &'static str,
    pub trap: GuestTrap,
}

/// A hostcall's success value as the guest receives it, and what the guest
/// receives instead when the call is refused.
pub trait AbiValue {
    type Abi: wasmtime::WasmRet;
    const FAILED: Self::Abi;
    fn into_abi(self) -> Self::Abi;
}

impl AbiValue for Handle {
    type Abi = i32;
    const FAILED: i32 = -1;
    fn into_abi(self) -> i32 {
        self.0
    }
}

impl AbiValue for HostcallStatus {
    type Abi = i32;
    const FAILED: i32 = HostcallStatus::Invalid as i32;
    fn into_abi(self) -> i32 {
        self as i32
    }
}

/// KV and DNS answers: 1 or 0.
impl AbiValue for bool {
    type Abi = i32;
    const FAILED: i32 = 0;
    fn into_abi(self) -> i32 {
        i32::from(self)
    }
}

/// A received response's status code, or `-1`.
impl AbiValue for http::StatusCode {
    type Abi = i32;
    const FAILED: i32 = -1;
    fn into_abi(self) -> i32 {
        i32::from(self.as_u16())
    }
}

/// Random numbers and the time: never refused.
impl AbiValue for i64 {
    type Abi = i64;
    const FAILED: i64 = 0;
    fn into_abi(self) -> i64 {
        self
    }
}

/// The result of a hostcall as the guest sees it.
pub fn finish<T: TerrafirmaView, R: AbiValue>(
    caller: &Caller<'_, T>,
    call: &'static str,
    result: Result<R, HostcallError>,
) -> wasmtime::Result<R::Abi> {
    match result {
        Ok(value) => Ok(value.into_abi()),
        Err(HostcallError::Refused(reason)) => {
            tracing::warn!(target: "guest", module = %caller.data().session().label(), request = %caller.data().session().request_id(), "{call}: {reason}");
            Ok(R::FAILED)
        }
        Err(HostcallError::Invalid) => Ok(R::FAILED),
        Err(HostcallError::Trap(trap)) => Err(HostcallTrap { call, trap }.into()),
        Err(HostcallError::Ended(error)) => Err(error),
    }
}

/// Hostcalls that answer nothing: a refusal is only logged.
impl AbiValue for () {
    type Abi = ();
    const FAILED: () = ();
    fn into_abi(self) {}
}

/// Runs a hostcall body that cannot wait (see the module doc) to its end.
pub fn finish_now<R>(body: impl Future<Output = Result<R, HostcallError>>) -> Result<R, HostcallError> {
    match pin!(body).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        // Only hostcalls that cannot wait are linked for direct calls.
        Poll::Pending => Err(HostcallError::Ended(wasmtime::format_err!("internal error: a directly called hostcall tried to wait"))),
    }
}

/// `plain!(linker, hostcall_x(a: i32, b: i32))` registers the function
/// `hostcall_x` as `env.hostcall_x`. (`T` is the caller's store data type.)
macro_rules! plain {
    ($linker:expr, $name:ident($($arg:ident: $ty:ty),*)) => {
        $linker.func_wrap(
            $crate::abi::terrafirma::MODULE,
            stringify!($name),
            |mut caller: ::wasmtime::Caller<'_, T>, $($arg: $ty),*| {
                let result = $name(&mut caller, $($arg),*);
                $crate::abi::terrafirma::register::finish(&caller, stringify!($name), result)
            },
        )?
    };
}

/// `waiting!(linker, hostcall_x(a: i32))` registers the `async` function
/// `hostcall_x`, which waits on the network, for guests on fibers.
macro_rules! waiting {
    ($linker:expr, $name:ident($($arg:ident: $ty:ty),*)) => {
        $linker.func_wrap_async(
            $crate::abi::terrafirma::MODULE,
            stringify!($name),
            |mut caller: ::wasmtime::Caller<'_, T>, ($($arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    let result = $name(&mut caller, $($arg),*).await;
                    $crate::abi::terrafirma::register::finish(&caller, stringify!($name), result)
                })
            },
        )?
    };
}

/// `reentrant!(linker, mode, hostcall_x(a: i32))` registers the `async`
/// function `hostcall_x`, which may call the guest's allocator, for `mode`.
macro_rules! reentrant {
    ($linker:expr, $mode:expr, $name:ident($($arg:ident: $ty:ty),*)) => {
        match $mode {
            // On a fiber, as a hostcall that waits is.
            $crate::sandbox::CallMode::Fiber => waiting!($linker, $name($($arg: $ty),*)),
            $crate::sandbox::CallMode::Direct => $linker.func_wrap(
                $crate::abi::terrafirma::MODULE,
                stringify!($name),
                |mut caller: ::wasmtime::Caller<'_, T>, $($arg: $ty),*| {
                    let result = $crate::abi::terrafirma::register::finish_now($name(&mut caller, $($arg),*));
                    $crate::abi::terrafirma::register::finish(&caller, stringify!($name), result)
                },
            )?,
        }
    };
}
