;; hello.wat: the smallest Terrafirma handler. Every request gets
;; "200 OK" with the body "Hello World!\n".
;;
;; Deploy (the admin API takes WAT text as it is) and call it:
;;   terrafirma deploy examples/hello.wat --name hello
;;   curl http://127.0.0.1:8080/hello
;;
;; The guest ABI is Terrarium's: the node calls the exported `run` once per
;; request, in a fresh instance; the guest talks to the host only through the
;; `env.hostcall_*` functions it imports.
(module
  ;; hostcall_resp_set_body(resp, body_ptr, body_len) -> status
  ;; resp 0 is the outgoing response; status 0 means Ok.
  (import "env" "hostcall_resp_set_body"
    (func $set_body (param i32 i32 i32) (result i32)))

  ;; One 64 KiB page of linear memory, exported so the host can read from it.
  (memory (export "memory") 1)

  ;; The body, 13 bytes at address 16.
  (data (i32.const 16) "Hello World!\n")

  ;; The handler. The status defaults to 200 and the headers to none, so
  ;; setting the body is all there is to do.
  (func (export "run")
    (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const 13)))))
