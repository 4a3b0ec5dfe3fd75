//! The per-request `Store` data shared by every executor, the limits every
//! store runs under (fuel, a wall-clock deadline checked on each epoch tick,
//! a memory cap), and how a guest's code is called (`CallMode`).

use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
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

/// How a guest's code is called, chosen per module at upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// Straight on the thread that serves the request: no fiber, no stack
    /// switch. For guests whose imports never wait on anything (no network
    /// hostcall, no WASI). A guest that has run for a whole epoch tick (it
    /// sees a second tick) gets its thread to itself (`release_worker`), so
    /// it cannot hold up other requests, and it ends at its deadline like
    /// any other.
    Direct,
    /// On a fiber, which suspends while a hostcall waits (outbound HTTP,
    /// DNS, WASI) and, once it has run for a whole epoch tick, yields to
    /// other requests on every tick.
    Fiber,
}

/// How long a directly called guest that has run for a whole epoch tick
/// sleeps, once per tick, while the tokio worker it ran on moves to another
/// thread. A sleeping thread leaves its core to the thread taking the worker
/// over; if that thread was not scheduled in time the worker stays here and
/// the next tick tries again. Costs such a guest about 1 % of its time.
const WORKER_HANDOFF: Duration = Duration::from_micros(50);

/// Runs `f`, which may block its thread for a while, without holding up
/// other requests: on a tokio worker, the worker (its queued tasks and its
/// share of the I/O driver) moves to another thread first.
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    let on_worker_pool = Handle::try_current().is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
    if on_worker_pool { tokio::task::block_in_place(f) } else { f() }
}

/// Called on each epoch tick of a guest called directly, from its second
/// on: gives the tokio worker it runs on to another thread, leaving this
/// thread to the guest. After the first success there is no worker here to
/// give and this only sleeps.
fn release_worker() {
    off_worker(|| std::thread::sleep(WORKER_HANDOFF));
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
    /// How this store's guest is called; hostcalls that call back into the
    /// guest (its allocator) call it the same way.
    pub mode: CallMode,
    /// Epoch ticks seen since the store was armed.
    pub ticks: u32,
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
            mode: CallMode::Fiber,
            ticks: 0,
        }
    }

    /// A store with its limiter and deadline callback installed, armed
    /// (`arm`) with `limits`; a prewarmed store is armed again when it runs.
    pub fn new_store(engine: &Engine, limits: &SandboxLimits, mode: CallMode) -> Store<Sandbox> {
        let mut store = Store::new(engine, Sandbox { mode, ..Sandbox::unarmed() });
        store.limiter(|sandbox| &mut sandbox.memory_cap);
        store.epoch_deadline_callback(move |mut ctx| {
            let sandbox = ctx.data_mut();
            if Instant::now() >= sandbox.deadline {
                return Err(DeadlineExceeded.into());
            }
            // A write the guest saw succeed reaches the operating system
            // within a tick, however long the guest runs on after it (a
            // failure is logged, and fails the request at its end).
            let _ = sandbox.session.flush_kv();
            // The first tick comes anywhere from 0 to one tick after the
            // guest started; only from the second on has it surely run for
            // a whole tick. Yielding or handing the worker off earlier
            // costs short guests that merely straddle a tick.
            sandbox.ticks += 1;
            if sandbox.ticks < 2 {
                return Ok(UpdateDeadline::Continue(1));
            }
            Ok(match mode {
                CallMode::Fiber => UpdateDeadline::Yield(1),
                CallMode::Direct => {
                    release_worker();
                    UpdateDeadline::Continue(1)
                }
            })
        });
        arm(&mut store, limits);
        store
    }
}

/// Gives the store a full tank of fuel and a deadline starting now.
pub fn arm(store: &mut Store<Sandbox>, limits: &SandboxLimits) {
    let sandbox = store.data_mut();
    sandbox.deadline = Instant::now() + limits.timeout;
    sandbox.ticks = 0;
    sandbox.memory_cap.cap = limits.memory_bytes;
    sandbox.session.max_response_bytes = limits.max_response_bytes;
    sandbox.session.max_request_bytes = limits.max_request_bytes;
    store.set_fuel(limits.fuel).expect("fuel is enabled on the engine");
    store.set_epoch_deadline(1);
}
