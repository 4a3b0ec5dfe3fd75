//! Tiered compilation's second tier: a module first served with baseline
//! (Winch) code is compiled with Cranelift on a thread of its own, at a
//! lower priority, and its handler swapped in atomically when ready
//! (requests in flight keep the handler they started with).

use std::path::PathBuf;
use std::sync::Arc;

use super::artifact::Plan;
use super::preinit::Initialization;
use super::registry::{Compiler, Deployed, Serving};
use super::store::root_message;
use crate::executor::{Handler, HandlerConfig, Runtime};

/// A module served with baseline code, to be compiled with Cranelift and
/// switched over.
pub(super) struct Upgrade {
    pub runtime: Arc<Runtime>,
    pub tmp: PathBuf,
    pub plan: Plan,
    pub wasm: Vec<u8>,
    pub initialization: Initialization,
    pub config: HandlerConfig,
    /// Weak: a version replaced or removed before its turn is not compiled.
    pub deployed: std::sync::Weak<Deployed>,
}

impl Upgrade {
    /// The thread that runs upgrades in the order they were sent; it ends
    /// when the store (the sender) is dropped.
    ///
    /// Cranelift compiles a module's functions in parallel on rayon's
    /// threads. Upgrades get a rayon pool of their own, at a lower CPU
    /// priority (`UPGRADE_NICE`), so that a new upload's baseline compile
    /// (on the global pool) and the requests being served are not held up
    /// behind a background compile.
    pub fn start_thread() -> std::io::Result<std::sync::mpsc::Sender<Upgrade>> {
        let (jobs, queue) = std::sync::mpsc::channel::<Upgrade>();
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("cranelift-{i}"))
            .start_handler(|_| lower_this_threads_priority())
            .build()
            .map_err(std::io::Error::other)?;
        std::thread::Builder::new().name("cranelift-upgrade".into()).spawn(move || {
            lower_this_threads_priority();
            for job in queue {
                pool.install(|| job.run());
            }
        })?;
        Ok(jobs)
    }

    fn run(self) {
        if self.deployed.strong_count() == 0 {
            return;
        }
        let label = self.config.label.clone();
        let started = std::time::Instant::now();
        let result = self
            .plan
            .compile(&self.runtime, &self.tmp, &self.wasm, self.initialization)
            .and_then(|compiled| Ok(Handler::new(&self.runtime, compiled.code, self.plan.abi(), self.config)?.0));
        match (result, self.deployed.upgrade()) {
            (Ok(handler), Some(deployed)) => {
                deployed.serving.store(Arc::new(Serving { handler, compiler: Compiler::Cranelift }));
                let compile_ms = started.elapsed().as_millis() as u64;
                tracing::info!(module = %label, compile_ms, "optimised (Cranelift) code now serves");
            }
            (Ok(_), None) => {}
            (Err(error), _) => {
                tracing::warn!(module = %label, "Cranelift compilation failed; baseline code keeps serving: {}", root_message(&error))
            }
        }
    }
}

/// The nice value of the threads that compile upgrades: about a tenth of
/// the CPU of a normal thread when both want it, so a node under load still
/// gets its optimised code, later.
const UPGRADE_NICE: libc::c_int = 10;

/// Linux keeps a nice value per thread: this lowers the calling thread's.
fn lower_this_threads_priority() {
    // SAFETY: plain syscalls on the calling thread; a failure only leaves
    // its priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, UPGRADE_NICE);
    }
}
