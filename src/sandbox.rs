//! What every guest runs under, whatever its interface: the limits of one
//! request (fuel, a wall-clock deadline checked on each epoch tick, a memory
//! cap), how its code is called (`CallMode`), and the part of a `Store`'s
//! data that enforces them (`Sandbox`). Each executor's store data embeds a
//! `Sandbox` and says where it is (`Sandboxed`).

use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

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
struct MemoryCap {
    cap: usize,
    denied: bool,
}

/// Most elements a guest's table may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.cap;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The limits part of a store's data.
#[derive(Debug)]
pub struct Sandbox {
    memory_cap: MemoryCap,
    deadline: Instant,
    mode: CallMode,
    /// Epoch ticks seen since the store was armed.
    ticks: u32,
    /// When the store was last armed, and with how much fuel.
    armed_at: Instant,
    tank: u64,
}

/// What a request cost in its sandbox: fuel burnt and wall-clock time since
/// its store was armed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub fuel: u64,
    pub time: Duration,
    /// Of which instantiating the guest (zero for a prewarmed instance).
    pub instantiate: Duration,
}

impl Sandbox {
    /// Limits not yet applied (`arm` applies them), for a guest called in `mode`.
    pub fn new(mode: CallMode) -> Sandbox {
        // Any instant will do until `arm` sets both: one clock read fewer
        // per request.
        static UNARMED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let now = *UNARMED.get_or_init(Instant::now);
        Sandbox { memory_cap: MemoryCap { cap: 0, denied: false }, deadline: now, mode, ticks: 0, armed_at: now, tank: 0 }
    }

    /// When the request's wall-clock limit ends it.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How this store's guest is called; hostcalls that call back into the
    /// guest (its allocator) call it the same way.
    pub fn mode(&self) -> CallMode {
        self.mode
    }

    /// Whether the memory cap refused a growth since the store was armed.
    pub fn memory_denied(&self) -> bool {
        self.memory_cap.denied
    }
}

/// Store data that embeds a `Sandbox`.
pub trait Sandboxed: Send + 'static {
    fn sandbox(&mut self) -> &mut Sandbox;

    /// Called on every epoch tick while the guest runs, before the deadline
    /// decides whether it goes on.
    fn on_epoch_tick(&mut self) {}
}

/// A store with its limiter and deadline callback installed, armed (`arm`)
/// with `limits`; a prewarmed store is armed again when it runs.
pub fn new_store<T: Sandboxed>(engine: &Engine, data: T, limits: &SandboxLimits) -> Store<T> {
    new_store_at(engine, data, limits, Instant::now())
}

/// `new_store`, armed as of `now`, read by the caller.
pub fn new_store_at<T: Sandboxed>(engine: &Engine, data: T, limits: &SandboxLimits, now: Instant) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|data| &mut data.sandbox().memory_cap);
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        if Instant::now() >= data.sandbox().deadline {
            return Err(DeadlineExceeded.into());
        }
        data.on_epoch_tick();
        let sandbox = data.sandbox();
        // The first tick comes anywhere from 0 to one tick after the guest
        // started; only from the second on has it surely run for a whole
        // tick. Yielding or handing the worker off earlier costs short
        // guests that merely straddle a tick.
        sandbox.ticks += 1;
        if sandbox.ticks < 2 {
            return Ok(UpdateDeadline::Continue(1));
        }
        Ok(match sandbox.mode {
            CallMode::Fiber => UpdateDeadline::Yield(1),
            CallMode::Direct => {
                release_worker();
                UpdateDeadline::Continue(1)
            }
        })
    });
    arm_at(&mut store, limits, now);
    store
}

/// Gives the store a full tank of fuel and a deadline starting now.
pub fn arm<T: Sandboxed>(store: &mut Store<T>, limits: &SandboxLimits) {
    arm_at(store, limits, Instant::now());
}

/// `arm`, with `now` read by the caller (one clock read fewer on the
/// request path).
pub fn arm_at<T: Sandboxed>(store: &mut Store<T>, limits: &SandboxLimits, now: Instant) {
    let sandbox = store.data_mut().sandbox();
    sandbox.deadline = now + limits.timeout;
    sandbox.armed_at = now;
    sandbox.tank = limits.fuel;
    sandbox.ticks = 0;
    sandbox.memory_cap.cap = limits.memory_bytes;
    store.set_fuel(limits.fuel).expect("fuel is enabled on the engine");
    store.set_epoch_deadline(1);
}

/// What the store's guest has cost since the store was last armed.
pub fn cost<T: Sandboxed>(store: &mut Store<T>) -> Cost {
    let left = store.get_fuel().unwrap_or(0);
    let sandbox = store.data_mut().sandbox();
    Cost { fuel: sandbox.tank.saturating_sub(left), time: sandbox.armed_at.elapsed(), instantiate: Duration::ZERO }
}
