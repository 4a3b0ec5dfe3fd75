//! How the `terrafirma` binary is linked, for the start-up of
//! `terrafirma run` (RESULTS.md has the measurements).
//!
//! - Position-dependent (`-no-pie`, the binary only): a position-independent
//!   one starts with the dynamic loader applying some 54,000 relative
//!   relocations, which writes (and so faults in and copies) every page of
//!   `.data.rel.ro`: 235 more page faults and about 0.4 ms more CPU per
//!   process start. The library, tests and benches are built as usual.
//! - libgcc's unwinder linked in statically (`libgcc_eh.a`, everything this
//!   package links): std asks for `-lgcc_s`, and the `libgcc_s.so` found
//!   first is a linker script here that names the static archive instead
//!   (gcc ships `libgcc_eh.a` beside `libgcc_s.so`).
//!   One shared library fewer to map and relocate, and no
//!   `__cpu_indicator_init` constructor, whose dozen `cpuid`s each exit to
//!   the hypervisor on a virtual machine: a cached run of a hello world
//!   2.5x -> 2.2x a shell script's (interleaved runs, 2026-12-02). What
//!   `-static-libgcc` does for C programs; Rust's own `crt-static` builds
//!   link `libgcc_eh` the same way.
//!
//! A static build (`crt-static`) is left as rustc makes it.
fn main() {
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if !features.split(',').any(|feature| feature == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        let dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("static-libgcc");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libgcc_s.so"), "INPUT ( -lgcc_eh )\n").unwrap();
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
