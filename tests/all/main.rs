//! Terrafirma's integration tests: one binary that starts real nodes on
//! ephemeral ports and talks HTTP to them, as a user would.

mod abi;
mod abi_table;
mod admin;
mod cgi;
mod cli;
mod connections;
mod crash;
mod dropfolder;
mod examples;
mod faults;
mod fleet;
mod fuzz;
mod harness;
mod hostile;
mod https;
mod kv;
mod operations;
mod outbound;
mod preinit;
mod process;
mod routing;
mod tiers;
mod upstream;
mod wasi_http;
