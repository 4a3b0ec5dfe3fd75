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

/// How a pool slot is made clean for the next instance, and why.
///
/// Where the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7 on), a slot can
/// be reset by asking the kernel which of its pages the guest wrote and
/// restoring only those, instead of rewriting all `KEEP_RESIDENT` bytes and
/// returning the rest to the kernel. A hello guest writes none: under `wrk
/// -t1 -c32` this cost about 2 µs less CPU per request than the full reset
/// (RESULTS.md). But the scan sees only pages present in memory: a page the
/// guest dirtied that the kernel then swapped out is not reported, so it is
/// neither restored nor returned, and the next instance in the slot could
/// read it. So the scan is used only where the node cannot swap; elsewhere
/// every slot gets the full reset, whose `madvise(MADV_DONTNEED)` drops
/// swapped pages too. Decided once, at start: an operator who turns swap on
/// later must restart the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReset {
    pub pagemap_scan: bool,
    pub reason: String,
}

impl SlotReset {
    /// The decision for this machine and this process's cgroup.
    pub fn for_this_machine() -> SlotReset {
        let swaps = std::fs::read_to_string("/proc/swaps").ok();
        let swap_max = cgroup_swap_max();
        SlotReset::decide(swaps.as_deref(), swap_max.as_deref())
    }

    /// `swaps`: `/proc/swaps`; `swap_max`: the cgroup's `memory.swap.max`
    /// (cgroup v2), where there is one.
    pub fn decide(swaps: Option<&str>, swap_max: Option<&str>) -> SlotReset {
        let scan = |reason: &str| SlotReset {
            pagemap_scan: true,
            reason: format!("slots reset by PAGEMAP_SCAN where the kernel has it: {reason}"),
        };
        let full = |reason: String| SlotReset { pagemap_scan: false, reason: format!("slots reset in full (no PAGEMAP_SCAN): {reason}") };
        if swap_max.map(str::trim) == Some("0") {
            return scan("this node's cgroup may not swap (memory.swap.max is 0)");
        }
        let Some(swaps) = swaps else {
            return full("/proc/swaps cannot be read, so swap may be on".to_owned());
        };
        let devices = swaps.lines().skip(1).filter(|line| !line.trim().is_empty()).count();
        if devices == 0 {
            scan("no swap device")
        } else {
            full(format!("swap is on ({devices} device(s) in /proc/swaps): the scan cannot see swapped-out pages"))
        }
    }
}

/// `memory.swap.max` of this process's cgroup (v2), if it has one.
fn cgroup_swap_max() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|line| line.strip_prefix("0::"))?;
    std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.swap.max", path.trim_end_matches('/'))).ok()
}

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
    build_engine_with(shape, &SlotReset::for_this_machine())
}

/// `build_engine` with the slot reset decided by the caller.
pub fn build_engine_with(shape: EngineShape, reset: &SlotReset) -> wasmtime::Result<Engine> {
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
        .pagemap_scan(if reset.pagemap_scan { Enabled::Auto } else { Enabled::No });

    let mut config = sandboxed_config(shape);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool)).memory_guard_size(GUARD_BYTES).signals_based_traps(false);
    Engine::new(&config)
}

/// What every engine of a node shares: copy-on-write memory images,
/// memories reserved at the configured cap, fuel, epoch interruption, the
/// stack sizes.
fn sandboxed_config(shape: EngineShape) -> WasmtimeConfig {
    let mut config = WasmtimeConfig::new();
    config
        .memory_init_cow(true)
        .memory_reservation(shape.max_memory_bytes as u64)
        .memory_reservation_for_growth(0)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20);
    config
}

/// The engine a new core module is served from while Cranelift compiles
/// it: Winch, a single-pass compiler about ten times faster at compiling
/// and a few times slower at running. The same fuel, epoch and memory
/// limits and copy-on-write images; instances allocated on demand (each
/// lives only until the optimised code takes over, so no pool is kept for
/// them); and the trap handling Winch needs: signals, with a guard region
/// after each memory.
pub fn build_baseline_engine(shape: EngineShape) -> wasmtime::Result<Engine> {
    let mut config = sandboxed_config(shape);
    config.strategy(wasmtime::Strategy::Winch).allocation_strategy(InstanceAllocationStrategy::OnDemand).signals_based_traps(true);
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn the_scan_is_used_only_where_the_node_cannot_swap() {
        assert!(SlotReset::decide(Some(HEADER), None).pagemap_scan, "no swap device");
        let swapping = format!("{HEADER}/dev/zram0                              partition\t4194300\t\t0\t\t100\n");
        let full = SlotReset::decide(Some(&swapping), None);
        assert!(!full.pagemap_scan && full.reason.contains("swap is on"), "{full:?}");
        assert!(!SlotReset::decide(Some(&swapping), Some("max\n")).pagemap_scan, "a cgroup that may swap");
        assert!(SlotReset::decide(Some(&swapping), Some("0\n")).pagemap_scan, "a cgroup that may not swap");
        assert!(!SlotReset::decide(None, None).pagemap_scan, "unknown: the safe choice");
    }

    #[test]
    fn an_engine_builds_with_either_reset() {
        let shape = EngineShape { instances: 2, max_memory_bytes: 1 << 20 };
        for pagemap_scan in [true, false] {
            build_engine_with(shape, &SlotReset { pagemap_scan, reason: String::new() }).unwrap();
        }
    }
}
