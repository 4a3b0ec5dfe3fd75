//! The raw hostcalls of the Terrafirma / Terrarium ABI (`env.hostcall_*`),
//! with the signatures of `docs/guest-abi.md`: on wasm32 a pointer and a
//! `usize` are `i32`, a `u64` is `i64`, and every status, handle and `bool`
//! is an `i32`. `sdk/abi.txt` lists the imports with their WebAssembly
//! types; `tests/all/abi_table.rs` checks this list against it.
//!
//! Results come back through out-pointers, in memory the host allocates
//! with the allocator registered by [`hostcall_init_mm`]; the safe modules
//! of this crate take ownership of it and free it (see [`crate::mem`]).
//!
//! Outside wasm32 (for `cargo check`, `cargo doc` and host unit tests)
//! every function here panics.

/// One element of a list the host hands out or reads: a buffer of `len`
/// bytes at `ptr` (8 bytes on wasm32: two little-endian `i32`s).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GuestSlice {
    pub ptr: *mut u8,
    pub len: usize,
}

/// Handle of the incoming request.
pub const REQUEST_INCOMING: i32 = 0;
/// Handle of the outgoing response.
pub const RESPONSE_OUTGOING: i32 = 0;
/// Handle returned when creating or sending a request failed.
pub const HANDLE_ERROR: i32 = -1;
/// Returned by [`hostcall_pending_req_poll`] while the request is in flight.
pub const HANDLE_NOT_READY: i32 = -2;
/// Status `Ok`.
pub const STATUS_OK: i32 = 0;
/// Status `Invalid`: bad handle, header name or value, or status code.
pub const STATUS_INVALID: i32 = 1;

/// Declares the imports on wasm32 and panicking stand-ins elsewhere, from
/// one list of signatures.
macro_rules! hostcalls {
    ($( $(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            $( $(#[$doc])* pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }

        $(
            #[cfg(not(target_arch = "wasm32"))]
            $(#[$doc])*
            ///
            /// # Safety
            /// Outside wasm32 this only panics.
            #[allow(unused_variables)]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                panic!(concat!(stringify!($name), " is a hostcall: it only exists in a wasm32 guest"))
            }
        )*
    };
}

hostcalls! {
    /// Registers the allocator the host uses for every result it hands out.
    pub fn hostcall_init_mm(malloc: extern "C" fn(usize) -> *mut u8, free: unsafe extern "C" fn(*mut u8));

    /// Method of a request, e.g. `GET`.
    pub fn hostcall_req_get_method(ptr_p: *mut *mut u8, len_p: *mut usize, req: i32);
    /// Request target with query, e.g. `/hello.wasm/a?b=1`.
    pub fn hostcall_req_get_path(ptr_p: *mut *mut u8, len_p: *mut usize, req: i32);
    /// Distinct header names, lower case.
    pub fn hostcall_req_get_headers(names_p: *mut *mut GuestSlice, count_p: *mut usize, req: i32);
    /// All values of one header (name case-insensitive); count 0 if absent.
    pub fn hostcall_req_get_header(values_p: *mut *mut GuestSlice, count_p: *mut usize, req: i32, name_ptr: *const u8, name_len: usize);
    /// Whole body of a request.
    pub fn hostcall_req_get_body(ptr_p: *mut *mut u8, len_p: *mut usize, req: i32);

    /// New outgoing request to an absolute URL: a request handle, or -1.
    pub fn hostcall_req_create(method_ptr: *const u8, method_len: usize, url_ptr: *const u8, url_len: usize) -> i32;
    /// Replaces a header of a created request with the listed values: a status.
    pub fn hostcall_req_set_header(req: i32, name_ptr: *const u8, name_len: usize, values_ptr: *const GuestSlice, values_count: usize) -> i32;
    /// Replaces the body of a created request: a status.
    pub fn hostcall_req_set_body(req: i32, body_ptr: *const u8, body_len: usize) -> i32;
    /// Sends and waits, consuming the request: a response handle, or -1.
    pub fn hostcall_req_send(req: i32) -> i32;
    /// Starts sending, consuming the request: a pending handle, or -1.
    pub fn hostcall_req_send_async(req: i32) -> i32;
    /// Non-blocking check: a response handle, -2 (not ready) or -1.
    pub fn hostcall_pending_req_poll(pending: i32) -> i32;
    /// Waits, consuming the pending handle: a response handle, or -1.
    pub fn hostcall_pending_req_wait(pending: i32) -> i32;
    /// Waits for the first of `count` pending handles and writes it to
    /// `*out_ptr`: a response handle, or -1. The others stay valid.
    pub fn hostcall_pending_req_select(pendings_ptr: *const i32, count: usize, out_ptr: *mut i32) -> i32;

    /// Status code of a received response.
    pub fn hostcall_resp_get_response_code(resp: i32) -> i32;
    /// Distinct header names of a received response, lower case.
    pub fn hostcall_resp_get_headers(names_p: *mut *mut GuestSlice, count_p: *mut usize, resp: i32);
    /// All values of one header of a received response.
    pub fn hostcall_resp_get_header(values_p: *mut *mut GuestSlice, count_p: *mut usize, resp: i32, name_ptr: *const u8, name_len: usize);
    /// Body of a received response.
    pub fn hostcall_resp_get_body(ptr_p: *mut *mut u8, len_p: *mut usize, resp: i32);
    /// Status of the outgoing response (`Invalid` outside 100..=999).
    pub fn hostcall_resp_set_response_code(resp: i32, code: i32) -> i32;
    /// Replaces an outgoing header with the listed values (one line each).
    pub fn hostcall_resp_set_header(resp: i32, name_ptr: *const u8, name_len: usize, values_ptr: *const GuestSlice, values_count: usize) -> i32;
    /// Replaces the outgoing body.
    pub fn hostcall_resp_set_body(resp: i32, body_ptr: *const u8, body_len: usize) -> i32;

    /// Sets key to value; 1 if the key was new.
    pub fn hostcall_kvstore_insert(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize) -> i32;
    /// Sets key to value only if absent; 1 if it was set.
    pub fn hostcall_kvstore_upsert(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize) -> i32;
    /// Appends to the value, creating it if absent; 1 if the key was new.
    pub fn hostcall_kvstore_append(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize) -> i32;
    /// 1 and the value if present; 0 and pointer 0 if not.
    pub fn hostcall_kvstore_get(ptr_p: *mut *mut u8, len_p: *mut usize, key_ptr: *const u8, key_len: usize) -> i32;
    /// 1 if a value was removed.
    pub fn hostcall_kvstore_remove(key_ptr: *const u8, key_len: usize) -> i32;

    /// Cryptographically secure random bits.
    pub fn hostcall_rng_next_u64() -> u64;
    /// Seconds since the Unix epoch; nanoseconds written to `*subsec_nanos_p` unless it is null.
    pub fn hostcall_time_now(subsec_nanos_p: *mut u32) -> u64;

    /// Addresses of a name, each a 4- or 16-byte slice; 0 and pointer 0 on failure.
    pub fn hostcall_dns_query_ip(ptr_p: *mut *mut GuestSlice, count_p: *mut usize, name_ptr: *const u8, name_len: usize, ipv6: i32) -> i32;
    /// Forwards a wire-format DNS query; 0 and pointer 0 on failure.
    pub fn hostcall_dns_query_raw(ptr_p: *mut *mut u8, len_p: *mut usize, query_ptr: *const u8, query_len: usize) -> i32;

    /// A line for the site's log (`msg_len` -1: NUL-terminated).
    pub fn hostcall_debug(msg_ptr: *const u8, msg_len: usize);
    /// The guest's panic message; the guest traps right after.
    pub fn hostcall_panic_hook(msg_ptr: *const u8, msg_len: usize);
}
