//! Faults: what ended a request without a guest response, mapped in one
//! place to the HTTP status and `x-terrafirma-error` value a client sees
//! (the table in `docs/errors.md`).

use std::fmt;

use http::StatusCode;
use wasmtime::{PoolConcurrencyLimitError, Trap};

use crate::abi::terrafirma::{GuestTrap, HostcallTrap};
use crate::sandbox::DeadlineExceeded;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    NotFound,
    Trap,
    Fuel,
    Timeout,
    Memory,
    Overloaded,
    BodyTooLarge,
    /// The guest's response is over the site's `max_response_bytes`.
    ResponseTooLarge,
    /// The client sent its request head or body too slowly.
    RequestTimeout,
    /// The KV writes the request made or read could not be made durable.
    Storage,
}

impl FaultKind {
    pub fn status(self) -> StatusCode {
        match self {
            FaultKind::NotFound => StatusCode::NOT_FOUND,
            FaultKind::Trap | FaultKind::Fuel | FaultKind::Memory | FaultKind::ResponseTooLarge | FaultKind::Storage => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            FaultKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            FaultKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            FaultKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FaultKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The value of the `x-terrafirma-error` header.
    pub fn code(self) -> &'static str {
        match self {
            FaultKind::NotFound => "not-found",
            FaultKind::Trap => "trap",
            FaultKind::Fuel => "fuel",
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Overloaded => "overloaded",
            FaultKind::BodyTooLarge => "body-too-large",
            FaultKind::ResponseTooLarge => "response-too-large",
            FaultKind::RequestTimeout => "request-timeout",
            FaultKind::Storage => "storage",
        }
    }
}

/// A request that ended without a guest response.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// One line for the client: never a host path or a host stack trace.
    pub reason: String,
}

impl Fault {
    pub fn new(kind: FaultKind, reason: impl Into<String>) -> Self {
        Fault { kind, reason: reason.into() }
    }

    /// The outcome of a guest call: success, or WASI `proc_exit(0)`, is
    /// `Ok`; a non-zero exit is a trap; anything else is classified.
    pub fn from_guest_result(result: wasmtime::Result<()>, memory_denied: bool) -> Result<(), Fault> {
        let Err(error) = result else { return Ok(()) };
        match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) if exit.0 == 0 => Ok(()),
            Some(exit) => Err(Fault::new(FaultKind::Trap, format!("guest exited with code {}", exit.0))),
            None => Err(Fault::from_guest_error(&error, memory_denied)),
        }
    }

    /// Classifies an error out of instantiation or a guest call.
    /// `memory_denied` says whether the store's limiter refused a growth.
    pub fn from_guest_error(error: &wasmtime::Error, memory_denied: bool) -> Fault {
        if error.downcast_ref::<DeadlineExceeded>().is_some() {
            return Fault::new(FaultKind::Timeout, "wall-clock limit exceeded");
        }
        if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Fault::new(FaultKind::Overloaded, "no instance slot free");
        }
        if let Some(trap) = error.downcast_ref::<Trap>() {
            if *trap == Trap::OutOfFuel {
                return Fault::new(FaultKind::Fuel, "fuel exhausted");
            }
            if memory_denied {
                return Fault::new(FaultKind::Memory, "memory limit exceeded");
            }
            return Fault::new(FaultKind::Trap, format!("guest trapped: {trap}"));
        }
        if memory_denied {
            return Fault::new(FaultKind::Memory, "memory limit exceeded");
        }
        if let Some(hostcall) = error.downcast_ref::<HostcallTrap>() {
            let kind = match hostcall.trap {
                GuestTrap::ResponseTooLarge { .. } => FaultKind::ResponseTooLarge,
                _ => FaultKind::Trap,
            };
            return Fault::new(kind, hostcall.to_string());
        }
        // Unknown imports linked as traps, and anything else wasmtime reports:
        // keep the first line of the top-level message only.
        let message = error.to_string();
        let first = message.lines().next().unwrap_or("guest failed");
        Fault::new(FaultKind::Trap, first.chars().take(200).collect::<String>())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.reason)
    }
}
