;; fetch.wat: `GET /fetch?url=URL` fetches URL (taken as it is, up to the
;; end of the request target) and answers with the upstream status, content
;; type and body; 502 if the request fails, for instance when the host is
;; not in the site's `outbound_hosts`:
;;
;;   $ curl 'http://127.0.0.1:8080/fetch?url=http://127.0.0.1:9000/'
;;
;; Deploy: terrafirma deploy examples/fetch.wat
(module
  (import "env" "hostcall_req_get_path" (func $get_path (param i32 i32 i32)))
  ;; (method_ptr, method_len, url_ptr, url_len) -> request handle or -1
  (import "env" "hostcall_req_create" (func $req_create (param i32 i32 i32 i32) (result i32)))
  ;; (req) -> response handle or -1
  (import "env" "hostcall_req_send" (func $req_send (param i32) (result i32)))
  (import "env" "hostcall_resp_get_response_code" (func $get_code (param i32) (result i32)))
  ;; (values_p, count_p, resp, name_ptr, name_len)
  (import "env" "hostcall_resp_get_header" (func $get_header (param i32 i32 i32 i32 i32)))
  (import "env" "hostcall_resp_get_body" (func $get_body (param i32 i32 i32)))
  (import "env" "hostcall_resp_set_response_code" (func $set_code (param i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_header" (func $set_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))
  (import "env" "hostcall_debug" (func $debug (param i32 i32)))

  (memory (export "memory") 1)

  ;; 0..32: out-pointers (path 0/4, header values 8/12, body 16/20);
  ;; 32..40: a GuestSlice.
  (data (i32.const 64) "GET")                                    ;; 3 bytes
  (data (i32.const 80) "content-type")                           ;; 12 bytes
  (data (i32.const 96) "text/plain; charset=utf-8")              ;; 25 bytes
  (data (i32.const 128) "usage: /fetch?url=http://host/path\n")  ;; 35 bytes
  (data (i32.const 176) "fetch: upstream request failed\n")      ;; 31 bytes

  (global $heap (mut i32) (i32.const 1024))

  ;; The host allocates the path, header values and the upstream body with
  ;; this exported malloc: a bump allocator, growing memory as needed.
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then unreachable))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16)))
                           (i32.const 0xffff))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; A text/plain answer with a status and a body from the data above.
  (func $answer (param $code i32) (param $body i32) (param $len i32)
    (i32.store (i32.const 32) (i32.const 96))
    (i32.store (i32.const 36) (i32.const 25))
    (drop (call $set_code (i32.const 0) (local.get $code)))
    (drop (call $set_header (i32.const 0) (i32.const 80) (i32.const 12) (i32.const 32) (i32.const 1)))
    (drop (call $set_body (i32.const 0) (local.get $body) (local.get $len))))

  (func (export "run")
    (local $path i32) (local $len i32) (local $at i32) (local $req i32) (local $resp i32)
    (call $get_path (i32.const 0) (i32.const 4) (i32.const 0))
    (local.set $path (i32.load (i32.const 0)))
    (local.set $len (i32.load (i32.const 4)))

    ;; $at: the first "?url=" in the target.
    (block $found
      (loop $scan
        (if (i32.gt_u (i32.add (local.get $at) (i32.const 5)) (local.get $len))
          (then (call $answer (i32.const 400) (i32.const 128) (i32.const 35)) (return)))
        ;; '?' then "url=" (as a little-endian i32: 0x3d6c7275).
        (br_if $found
          (i32.and
            (i32.eq (i32.load8_u (i32.add (local.get $path) (local.get $at))) (i32.const 0x3f))
            (i32.eq (i32.load (i32.add (i32.add (local.get $path) (local.get $at)) (i32.const 1)))
                    (i32.const 0x3d6c7275))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $scan)))
    (local.set $at (i32.add (local.get $at) (i32.const 5)))

    ;; GET the URL; -1 from either call: 502.
    (local.set $req (call $req_create (i32.const 64) (i32.const 3)
                                      (i32.add (local.get $path) (local.get $at))
                                      (i32.sub (local.get $len) (local.get $at))))
    (local.set $resp (i32.const -1))
    (if (i32.ne (local.get $req) (i32.const -1))
      (then (local.set $resp (call $req_send (local.get $req)))))
    (if (i32.eq (local.get $resp) (i32.const -1))
      (then
        (call $debug (i32.const 176) (i32.const 30))
        (call $answer (i32.const 502) (i32.const 176) (i32.const 31))
        (return)))

    ;; Status, content type (the value list from get_header is what
    ;; set_header takes), body.
    (drop (call $set_code (i32.const 0) (call $get_code (local.get $resp))))
    (call $get_header (i32.const 8) (i32.const 12) (local.get $resp) (i32.const 80) (i32.const 12))
    (if (i32.load (i32.const 12))
      (then
        (drop (call $set_header (i32.const 0) (i32.const 80) (i32.const 12)
                                (i32.load (i32.const 8)) (i32.load (i32.const 12))))))
    (call $get_body (i32.const 16) (i32.const 20) (local.get $resp))
    (drop (call $set_body (i32.const 0) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
