//! The per-request `Store` data shared by every executor, and the limits
//! every store runs under: fuel, a wall-clock deadline checked on each epoch
//! tick, and a memory cap.

use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::abi::terrafirma::Session;
use crate::config::Limits;

/// The limits one request runs under (a site's `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    pub fuel: u64,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub max_response_bytes: usize,
    pub max_request_bytes: usize,
}

impl From<&Limits> for SandboxLimits {
    fn from(limits: &Limits) -> Self {
        SandboxLimits {
            fuel: limits.fuel,
            timeout: Duration::from_millis(limits.timeout_ms),
            memory_bytes: limits.memory_bytes(),
            max_response_bytes: limits.max_response_bytes as usize,
            max_request_bytes: limits.max_request_bytes as usize,
        }
    }
}

/// Raised from the epoch callback when a request's deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock limit exceeded")]
pub struct DeadlineExceeded;

/// Caps linear memory growth and remembers that it refused one, so the trap
/// that usually follows (a Rust guest aborts) is reported as `memory`.
#[derive(Debug)]
pub struct MemoryCap {
    pub cap: usize,
    pub denied: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.cap;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Store data of one sandbox.
pub struct Sandbox {
    pub session: Session,
    pub wasi: Option<WasiP1Ctx>,
    /// Where WASI stdout/stderr went, for the log.
    pub guest_log: Option<MemoryOutputPipe>,
    pub memory_cap: MemoryCap,
    pub deadline: Instant,
}

impl Sandbox {
    /// Store data with no limits applied, for stores that never run code.
    pub fn unarmed() -> Sandbox {
        Sandbox {
            session: Session::default(),
            wasi: None,
            guest_log: None,
            memory_cap: MemoryCap { cap: 0, denied: false },
            deadline: Instant::now(),
        }
    }

    /// A store with its limiter and deadline callback installed. Fuel and the
    /// deadline are set by `arm`, so a prewarmed store can be armed later.
    pub fn new_store(engine: &Engine, limits: &SandboxLimits) -> Store<Sandbox> {
        let sandbox = Sandbox {
            session: Session::default(),
            wasi: None,
            guest_log: None,
            memory_cap: MemoryCap { cap: limits.memory_bytes, denied: false },
            deadline: Instant::now() + limits.timeout,
        };
        let mut store = Store::new(engine, sandbox);
        store.limiter(|sandbox| &mut sandbox.memory_cap);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(DeadlineExceeded.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        arm(&mut store, limits);
        store
    }
}

/// Gives the store a full tank of fuel and a deadline starting now.
pub fn arm(store: &mut Store<Sandbox>, limits: &SandboxLimits) {
    store.data_mut().deadline = Instant::now() + limits.timeout;
    store.data_mut().memory_cap.cap = limits.memory_bytes;
    store.data_mut().session.max_response_bytes = limits.max_response_bytes;
    store.data_mut().session.max_request_bytes = limits.max_request_bytes;
    store.set_fuel(limits.fuel).expect("fuel is enabled on the engine");
    store.set_epoch_deadline(1);
}
