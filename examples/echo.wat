;; echo.wat: answers with the request's method and target on the first line,
;; then the request body:
;;
;;   $ curl -d 'some data' 'http://127.0.0.1:8080/echo/a/b?x=1'
;;   POST /echo/a/b?x=1
;;   some data
;;
;; Deploy: terrafirma deploy examples/echo.wat --name echo
;;
;; Hostcalls that return variable-length data (method, path, body, headers)
;; write it into memory the host allocates with the guest's own allocator,
;; then store the address and length at two out-pointers. This module exports
;; `malloc` for that: a bump allocator, which is all a guest needs because an
;; instance lives for one request and is then thrown away.
(module
  ;; (ptr_p, len_p, req): writes *ptr_p and *len_p; req 0 is the incoming request.
  (import "env" "hostcall_req_get_method" (func $get_method (param i32 i32 i32)))
  (import "env" "hostcall_req_get_path" (func $get_path (param i32 i32 i32)))
  (import "env" "hostcall_req_get_body" (func $get_body (param i32 i32 i32)))
  ;; (resp, body_ptr, body_len) -> status
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Addresses 0..24 hold the out-pointers; the heap starts at 1024.
  (global $heap (mut i32) (i32.const 1024))

  ;; malloc(size) -> ptr: 8-byte aligned bump allocation, growing memory as
  ;; needed; traps when memory cannot grow (the node then answers 500).
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local $end i32)
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    ;; A size that wraps around the 32-bit address space cannot be served.
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then unreachable))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add
                    (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16)))
                    (i32.const 0xffff))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; Copies len bytes from src to dst and returns the address just past them.
  (func $append (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  (func (export "run")
    (local $method i32) (local $method_len i32)
    (local $path i32) (local $path_len i32)
    (local $body i32) (local $body_len i32)
    (local $out i32) (local $out_len i32) (local $at i32)

    (call $get_method (i32.const 0) (i32.const 4) (i32.const 0))
    (local.set $method (i32.load (i32.const 0)))
    (local.set $method_len (i32.load (i32.const 4)))
    (call $get_path (i32.const 8) (i32.const 12) (i32.const 0))
    (local.set $path (i32.load (i32.const 8)))
    (local.set $path_len (i32.load (i32.const 12)))
    (call $get_body (i32.const 16) (i32.const 20) (i32.const 0))
    (local.set $body (i32.load (i32.const 16)))
    (local.set $body_len (i32.load (i32.const 20)))

    ;; METHOD ' ' PATH '\n' BODY
    (local.set $out_len
      (i32.add (i32.add (local.get $method_len) (local.get $path_len))
               (i32.add (local.get $body_len) (i32.const 2))))
    (local.set $out (call $malloc (local.get $out_len)))
    (local.set $at (call $append (local.get $out) (local.get $method) (local.get $method_len)))
    (i32.store8 (local.get $at) (i32.const 0x20)) ;; ' '
    (local.set $at (call $append (i32.add (local.get $at) (i32.const 1))
                                 (local.get $path) (local.get $path_len)))
    (i32.store8 (local.get $at) (i32.const 0x0a)) ;; '\n'
    (drop (call $append (i32.add (local.get $at) (i32.const 1))
                        (local.get $body) (local.get $body_len)))

    (drop (call $set_body (i32.const 0) (local.get $out) (local.get $out_len)))))
