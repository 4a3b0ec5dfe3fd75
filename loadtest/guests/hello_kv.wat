;; hello_kv.wat: examples/hello.wat plus one KV get and one KV insert per
;; request, for loadtest/abi.sh: the difference between the two guests'
;; request rates is what a get + insert costs. The insert writes the key
;; `hits` with the same 13 bytes every time; the answer is the hello body.
(module
  (import "env" "hostcall_kvstore_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "hostcall_kvstore_insert" (func $kv_insert (param i32 i32 i32 i32) (result i32)))
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello World!\n")
  (data (i32.const 32) "hits")
  ;; The host hands the value it read into memory from this bump allocator.
  (global $heap (mut i32) (i32.const 1024))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  ;; Out-pointers of the get at 0 and 4.
  (func (export "run")
    (drop (call $kv_get (i32.const 0) (i32.const 4) (i32.const 32) (i32.const 4)))
    (drop (call $kv_insert (i32.const 32) (i32.const 4) (i32.const 16) (i32.const 13)))
    (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const 13)))))
