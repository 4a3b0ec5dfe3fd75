//! Terrafirma: a serverless WebAssembly edge node. Modules are compiled ahead
//! of time at upload; every request runs in a fresh instance from wasmtime's
//! pooling allocator with a copy-on-write memory image, under fuel, epoch and
//! memory limits.

pub mod abi;
pub mod admin;
pub mod config;
pub mod engine;
pub mod executor;
pub mod kv;
pub mod modules;
pub mod node;
pub mod outbound;
pub mod runtime;
pub mod server;
