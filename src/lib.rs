//! Terrafirma: a serverless WebAssembly edge node. Modules are compiled ahead
//! of time at upload; every request runs in a fresh instance from wasmtime's
//! pooling allocator with a copy-on-write memory image, under fuel, epoch and
//! memory limits.
//!
//! Modules depend downwards only: `node` → `server`, `admin` → `modules` →
//! `executor` → `abi` → `sandbox`, `messages`; `config`, `names`, `kv`,
//! `outbound` and `engine` are leaves the others use.

mod abi;
mod admin;
mod admission;
pub mod allocator;
mod certs;
pub mod config;
pub mod engine;
pub mod executor;
pub mod fleet;
pub mod kv;
pub mod messages;
mod metrics;
mod modules;
mod names;
pub mod node;
mod outbound;
pub mod sandbox;
mod server;
pub use modules::{artifact, prepare};
pub use outbound::{MAX_OUTBOUND_REQUESTS, RECEIVED_BODIES_FACTOR};
pub use server::routing::script_name_len;
