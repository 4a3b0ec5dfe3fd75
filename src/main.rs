//! The `terrafirma` binary: parse the command line, dispatch, exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

#[global_allocator]
static GLOBAL: terrafirma::allocator::NodeAllocator = terrafirma::allocator::NodeAllocator;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match args.command.execute() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("terrafirma: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs before `main`, before the first allocation: for `terrafirma run`,
/// no transparent huge pages. mimalloc asks for them on its arena, and the
/// first allocation then faults in a 2 MiB page the kernel must zero, 0.15 ms
/// of a run that needs a few hundred KiB; the node keeps them. glibc passes
/// `argc` and `argv` to the functions in `.init_array`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static NO_HUGE_PAGES_FOR_RUN: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) = {
    extern "C" fn no_huge_pages_for_run(argc: libc::c_int, argv: *const *const libc::c_char, _env: *const *const libc::c_char) {
        // SAFETY: glibc's `argv` holds `argc` C strings.
        if argc >= 2 && unsafe { std::ffi::CStr::from_ptr(*argv.add(1)) } == c"run" {
            // SAFETY: a process-wide flag; nothing runs concurrently yet.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        }
    }
    no_huge_pages_for_run
};
