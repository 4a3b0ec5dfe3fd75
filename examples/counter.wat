;; counter.wat: adds one to a counter in the site's KV store on each request
;; and answers with the new value:
;;
;;   $ curl http://127.0.0.1:8080/counter        # key "count"
;;   1
;;   $ curl http://127.0.0.1:8080/counter/a?x=1  # key "count/a" (query ignored)
;;   1
;;
;; Deploy: terrafirma deploy examples/counter.wat
;;
;; The value is the count in decimal ASCII. The read and the write are two
;; hostcalls: two requests at the same moment may both write the same value.
(module
  (import "env" "hostcall_req_get_path" (func $get_path (param i32 i32 i32)))
  ;; (ptr_p, len_p, key_ptr, key_len) -> 1 and the value if present, 0 if not
  (import "env" "hostcall_kvstore_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  ;; (key_ptr, key_len, val_ptr, val_len) -> 1 if the key was new
  (import "env" "hostcall_kvstore_insert" (func $kv_insert (param i32 i32 i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_header" (func $set_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; 0..16: out-pointers (path 0/4, KV value 8/12); 16..24: a GuestSlice.
  (data (i32.const 64) "count")                       ;; 5 bytes
  (data (i32.const 80) "content-type")                ;; 12 bytes
  (data (i32.const 96) "text/plain; charset=utf-8")   ;; 25 bytes
  ;; 128..160: the count in decimal, right-aligned, then '\n' at 159.

  (global $heap (mut i32) (i32.const 1024))

  ;; The host allocates the path and the KV value with this exported malloc:
  ;; a bump allocator (an instance lives for one request), growing memory.
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

  (func (export "run")
    (local $path i32) (local $len i32) (local $start i32) (local $end i32)
    (local $key i32) (local $key_len i32)
    (local $value i32) (local $value_end i32) (local $count i64) (local $digits i32)

    (call $get_path (i32.const 0) (i32.const 4) (i32.const 0))
    (local.set $path (i32.load (i32.const 0)))
    (local.set $len (i32.load (i32.const 4)))

    ;; $end: the first '?' or the end of the target.
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $end) (local.get $len)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $path) (local.get $end))) (i32.const 0x3f)))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $scan)))
    ;; $start: the second '/' (after the module name), or $end.
    (local.set $start (i32.const 1))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $start) (local.get $end)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $path) (local.get $start))) (i32.const 0x2f)))
        (local.set $start (i32.add (local.get $start) (i32.const 1)))
        (br $scan)))
    (if (i32.gt_u (local.get $start) (local.get $end)) (then (local.set $start (local.get $end))))

    ;; key = "count" ++ path[$start..$end]
    (local.set $key_len (i32.add (i32.const 5) (i32.sub (local.get $end) (local.get $start))))
    (local.set $key (call $malloc (local.get $key_len)))
    (memory.copy (local.get $key) (i32.const 64) (i32.const 5))
    (memory.copy (i32.add (local.get $key) (i32.const 5))
                 (i32.add (local.get $path) (local.get $start))
                 (i32.sub (local.get $end) (local.get $start)))

    ;; count = decimal value of the key (0 if absent), plus one.
    (if (call $kv_get (i32.const 8) (i32.const 12) (local.get $key) (local.get $key_len))
      (then
        (local.set $value (i32.load (i32.const 8)))
        (local.set $value_end (i32.add (local.get $value) (i32.load (i32.const 12))))
        (block $done
          (loop $digit
            (br_if $done (i32.ge_u (local.get $value) (local.get $value_end)))
            (br_if $done (i32.gt_u (i32.sub (i32.load8_u (local.get $value)) (i32.const 0x30)) (i32.const 9)))
            (local.set $count
              (i64.add (i64.mul (local.get $count) (i64.const 10))
                       (i64.extend_i32_u (i32.sub (i32.load8_u (local.get $value)) (i32.const 0x30)))))
            (local.set $value (i32.add (local.get $value) (i32.const 1)))
            (br $digit)))))
    (local.set $count (i64.add (local.get $count) (i64.const 1)))

    ;; Digits backwards from 158, '\n' at 159.
    (i32.store8 (i32.const 159) (i32.const 0x0a))
    (local.set $digits (i32.const 159))
    (loop $digit
      (local.set $digits (i32.sub (local.get $digits) (i32.const 1)))
      (i32.store8 (local.get $digits)
        (i32.add (i32.const 0x30) (i32.wrap_i64 (i64.rem_u (local.get $count) (i64.const 10)))))
      (local.set $count (i64.div_u (local.get $count) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $count) (i64.const 0))))

    ;; Store the digits, answer with the digits and the newline.
    (drop (call $kv_insert (local.get $key) (local.get $key_len)
                           (local.get $digits) (i32.sub (i32.const 159) (local.get $digits))))
    (i32.store (i32.const 16) (i32.const 96))
    (i32.store (i32.const 20) (i32.const 25))
    (drop (call $set_header (i32.const 0) (i32.const 80) (i32.const 12) (i32.const 16) (i32.const 1)))
    (drop (call $set_body (i32.const 0) (local.get $digits) (i32.sub (i32.const 160) (local.get $digits))))))
