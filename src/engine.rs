//! The one wasmtime `Engine` of a node: pooling allocator sized for the
//! machine, copy-on-write memory images, fuel and epoch interruption, and the
//! epoch ticker thread that drives wall-clock limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config as WasmtimeConfig, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::Config;

/// How often the epoch advances. A running guest yields to the scheduler and
/// has its wall-clock deadline checked once per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Linear memory kept resident (not returned to the kernel) when a pool slot
/// is reused: the first pages of a hello guest stay hot.
const KEEP_RESIDENT: usize = 64 << 10;

/// Where the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7 on), a slot is
/// reset by asking the kernel which of its pages the guest wrote and
/// restoring only those, instead of rewriting all `KEEP_RESIDENT` bytes.
/// A hello guest writes none: under `wrk -t1 -c32` this cost about 2 µs less
/// CPU per request than the `memset` (RESULTS.md), most of it from not
/// flushing the caches hyper and the kernel work in. Elsewhere wasmtime
/// falls back to the `memset`.
const PAGEMAP_SCAN: Enabled = Enabled::Auto;

/// Memories are reserved at the configured cap, far below the 4 GiB a
/// 32-bit address can reach, so compiled code checks every access against
/// the memory's length anyway. With no guard region and no reliance on
/// signals for traps, wasmtime also needs no page protections: a slot
/// stays read-write up to the most its guests ever grew to, and reusing it
/// changes no mapping. Otherwise every instance that grows its memory (a
/// Rust or C guest's allocator does) costs two `mprotect` calls, each a
/// TLB shootdown across the node's threads and a write lock on its address
/// space. Pages past a guest's size are still reset for the next one.
const GUARD_BYTES: u64 = 0;

/// Engine sizing derived from the node config.
#[derive(Debug, Clone, Copy)]
pub struct EngineShape {
    pub instances: u32,
    pub max_memory_bytes: usize,
}

impl EngineShape {
    pub fn from_config(config: &Config) -> Self {
        EngineShape { instances: config.pool.instances, max_memory_bytes: config.max_memory_bytes() }
    }
}

/// Builds the engine every module of this node is compiled for.
pub fn build_engine(shape: EngineShape) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(shape.instances)
        .total_memories(shape.instances)
        .total_tables(shape.instances)
        .total_stacks(shape.instances)
        .total_component_instances(shape.instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(shape.max_memory_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(16 << 10)
        .pagemap_scan(PAGEMAP_SCAN);

    let mut config = WasmtimeConfig::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .memory_reservation(shape.max_memory_bytes as u64)
        .memory_reservation_for_growth(0)
        .memory_guard_size(GUARD_BYTES)
        .signals_based_traps(false)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20);
    Engine::new(&config)
}

/// A short hex digest of the engine's compatibility hash: artifacts compiled
/// by another engine configuration or wasmtime version get another name.
pub fn compatibility_tag(engine: &Engine) -> String {
    use sha2::{Digest, Sha256};
    use std::hash::{Hash, Hasher};
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            unreachable!("only the digest is read")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Advances the engine's epoch every `EPOCH_TICK` until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::park_timeout(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
