//! Links the `terrafirma` binary as a position-dependent executable.
//!
//! A position-independent one starts with the dynamic loader applying some
//! 54,000 relative relocations, which writes (and so faults in and copies)
//! every page of `.data.rel.ro`: 235 more page faults and about 0.4 ms more
//! CPU per process start on this project's machine (`perf stat`, RESULTS.md),
//! a third of what `terrafirma run` of a cached hello world costs. The node
//! runs for long and does not care; `run` is judged on start-up. The library,
//! tests and benches are built as usual. A static build (`crt-static`) is
//! left as rustc makes it.
fn main() {
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if !features.split(',').any(|feature| feature == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
