//! The `terrafirma` binary: parse the command line, dispatch, exit code.
//!
//! The C `main` is this file's own (`no_main`), not std's: std's start-up
//! asks the C library for the main thread's stack bounds, which glibc finds
//! by reading and parsing `/proc/self/maps` (and a CPU affinity call), and
//! sets up an alternate signal stack: a dozen system calls and 2 % of the
//! `perf` samples of a cached `terrafirma run` of a hello world. What of it
//! the program needs is done
//! here: `SIGPIPE` ignored (writes to a closed socket are errors, not the
//! end of the process), standard descriptors that are closed opened on
//! `/dev/null`, stdout flushed before the end. What is given up is std's
//! "has overflowed its stack" message: a host thread that overflows its
//! stack still ends the process, by `SIGSEGV`.
#![cfg_attr(not(test), no_main)]

mod cli;

#[global_allocator]
static GLOBAL: terrafirma::allocator::NodeAllocator = terrafirma::allocator::NodeAllocator;

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    terrafirma_main()
}

// Unused only in the unit tests' build, which has the test harness's `main`.
#[cfg_attr(test, allow(dead_code))]
fn terrafirma_main() -> libc::c_int {
    start_up();
    let code = match cli::Command::parse().execute() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("terrafirma: {error:#}");
            libc::EXIT_FAILURE
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

/// What std's start-up did that the program relies on.
#[cfg_attr(test, allow(dead_code))]
fn start_up() {
    for fd in 0..=2 {
        // SAFETY: plain system calls on the standard descriptors.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 && *libc::__errno_location() == libc::EBADF {
                // Opens the lowest free descriptor, which is `fd`.
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // SAFETY: sets the disposition of a signal nothing else handles.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Runs before `main`, before the first allocation: for `terrafirma run`,
/// the C library's allocator instead of mimalloc, and no transparent huge
/// pages. mimalloc's size classes each start on a fresh page, so a one-off
/// run that allocates a few hundred KiB faults in more pages than glibc's
/// packed heap (285 page faults against 228 for a cached hello world, and a
/// fifth of its time); the node keeps mimalloc. Without huge pages a first
/// touch of the guest's memory cannot fault in a 2 MiB page the kernel must
/// zero. glibc passes `argc` and `argv` to the functions in `.init_array`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static ONE_OFF_RUN: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) = {
    extern "C" fn one_off_run(argc: libc::c_int, argv: *const *const libc::c_char, _env: *const *const libc::c_char) {
        // SAFETY: glibc's `argv` holds `argc` C strings.
        if argc >= 2 && unsafe { std::ffi::CStr::from_ptr(*argv.add(1)) } == c"run" {
            // SAFETY: a process-wide flag; nothing runs concurrently yet.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
            // SAFETY: before main, so before the first allocation.
            unsafe { terrafirma::allocator::use_system_allocator() };
        }
    }
    one_off_run
};

/// The three functions of the C maths library the program calls (std's
/// `f64::exp`, `f64::powf` and `f32::ln` end in them), from the `libm`
/// crate (musl's, in Rust) instead, so that `libm.so.6` is not needed and
/// not loaded: one shared library fewer for the dynamic loader to map,
/// relocate and search at every start. Should the program come to need
/// another of its functions, the linker (`--as-needed`) brings `libm.so.6`
/// back by itself: only the start-up gets slower.
mod maths {
    #[unsafe(no_mangle)]
    extern "C" fn exp(x: f64) -> f64 {
        libm::exp(x)
    }

    #[unsafe(no_mangle)]
    extern "C" fn pow(x: f64, y: f64) -> f64 {
        libm::pow(x, y)
    }

    #[unsafe(no_mangle)]
    extern "C" fn logf(x: f32) -> f32 {
        libm::logf(x)
    }
}
