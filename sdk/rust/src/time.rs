//! Wall-clock time from the host (`hostcall_time_now`). On
//! `wasm32-unknown-unknown`, `SystemTime::now()` of std panics; this works
//! on every target.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sys;

/// The current time.
pub fn now() -> SystemTime {
    let mut nanos = 0u32;
    // SAFETY: a valid out-pointer.
    let secs = unsafe { sys::hostcall_time_now(&mut nanos) };
    UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999))
}
