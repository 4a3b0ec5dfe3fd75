;; headers.wat: sets response headers, one of them with several values, and
;; a status code:
;;
;;   $ curl -i http://127.0.0.1:8080/headers
;;   HTTP/1.1 201 Created
;;   content-type: text/plain; charset=utf-8
;;   set-cookie: flavor=oatmeal
;;   set-cookie: size=large
;;   ...
;;
;; Deploy: terrafirma deploy examples/headers.wat --name headers
;;
;; hostcall_resp_set_header(resp, name_ptr, name_len, values_ptr, values_count)
;; replaces one header with a list of values. The list is an array of
;; GuestSlice { ptr: i32, len: i32 } (8 bytes each, little-endian); each
;; value becomes one header line.
(module
  (import "env" "hostcall_resp_set_response_code"
    (func $set_code (param i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_header"
    (func $set_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_body"
    (func $set_body (param i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; The strings: header names, values and the body.
  (data (i32.const 64) "content-type")                ;; 12 bytes
  (data (i32.const 80) "text/plain; charset=utf-8")   ;; 25 bytes
  (data (i32.const 112) "set-cookie")                 ;; 10 bytes
  (data (i32.const 128) "flavor=oatmeal")             ;; 14 bytes
  (data (i32.const 144) "size=large")                 ;; 10 bytes
  (data (i32.const 160) "Two cookies and a content type.\n") ;; 32 bytes

  ;; Stores one GuestSlice { ptr, len } at address at.
  (func $slice (param $at i32) (param $ptr i32) (param $len i32)
    (i32.store (local.get $at) (local.get $ptr))
    (i32.store offset=4 (local.get $at) (local.get $len)))

  (func (export "run")
    ;; Values of content-type: one slice at 256.
    (call $slice (i32.const 256) (i32.const 80) (i32.const 25))
    ;; Values of set-cookie: two slices at 264 and 272.
    (call $slice (i32.const 264) (i32.const 128) (i32.const 14))
    (call $slice (i32.const 272) (i32.const 144) (i32.const 10))

    ;; Each call returns a status (0 Ok, 1 Invalid); this example ignores it.
    (drop (call $set_code (i32.const 0) (i32.const 201)))
    (drop (call $set_header (i32.const 0) (i32.const 64) (i32.const 12)
                            (i32.const 256) (i32.const 1)))
    (drop (call $set_header (i32.const 0) (i32.const 112) (i32.const 10)
                            (i32.const 264) (i32.const 2)))
    (drop (call $set_body (i32.const 0) (i32.const 160) (i32.const 32)))))
