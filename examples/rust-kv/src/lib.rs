//! A Rust guest in the style of the 2019 `http_guest` crates, with no SDK:
//! raw `extern "C"` hostcalls, the allocator registered by table index with
//! `hostcall_init_mm` (a no-op `free`: the instance lives for one request).
//! `POST` appends the body to the site's KV key `log` (status 201); every
//! request answers with the method and the log so far.
use std::alloc::{alloc, Layout};
extern "C" {
    fn hostcall_init_mm(malloc: extern "C" fn(usize) -> *mut u8, free: extern "C" fn(*mut u8));
    fn hostcall_req_get_method(ptr_p: *mut *mut u8, len_p: *mut usize, req: i32);
    fn hostcall_req_get_body(ptr_p: *mut *mut u8, len_p: *mut usize, req: i32);
    fn hostcall_resp_set_body(resp: i32, ptr: *const u8, len: usize) -> i32;
    fn hostcall_resp_set_response_code(resp: i32, code: u16) -> i32;
    fn hostcall_kvstore_append(kp: *const u8, kl: usize, vp: *const u8, vl: usize) -> i32;
    fn hostcall_kvstore_get(ptr_p: *mut *mut u8, len_p: *mut usize, kp: *const u8, kl: usize) -> i32;
}
extern "C" fn guest_malloc(size: usize) -> *mut u8 { unsafe { alloc(Layout::from_size_align(size.max(1), 1).unwrap()) } }
extern "C" fn guest_free(_ptr: *mut u8) {}
unsafe fn owned(ptr: *mut u8, len: usize) -> Vec<u8> { std::slice::from_raw_parts(ptr, len).to_vec() }
#[no_mangle]
pub extern "C" fn run() {
    unsafe {
        hostcall_init_mm(guest_malloc, guest_free);
        let (mut p, mut l) = (std::ptr::null_mut(), 0usize);
        hostcall_req_get_method(&mut p, &mut l, 0);
        let method = String::from_utf8(owned(p, l)).unwrap();
        hostcall_req_get_body(&mut p, &mut l, 0);
        let body = owned(p, l);
        if method == "POST" {
            hostcall_kvstore_append(b"log".as_ptr(), 3, body.as_ptr(), body.len());
            hostcall_resp_set_response_code(0, 201);
        }
        let found = hostcall_kvstore_get(&mut p, &mut l, b"log".as_ptr(), 3);
        let log = if found == 1 { owned(p, l) } else { b"(empty)".to_vec() };
        let out = format!("rust guest, {method}: log={}\n", String::from_utf8_lossy(&log));
        hostcall_resp_set_body(0, out.as_ptr(), out.len());
    }
}
