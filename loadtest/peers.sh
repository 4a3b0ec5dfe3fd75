#!/usr/bin/env bash
# Every peer on the same work, in one report: the native hyper hello, the
# node's Terrafirma hello, wasi:http hello, CGI hello, KV guest and a guest
# with a 10 MB data segment, and `wasmtime serve` on the same wasi:http
# component (where installed). Loopback only, interleaved rounds, every
# answer checked first, every run bounded.
#
# Per target and round: requests/s at saturation (`wrk -t1 -c32`) and the
# server's CPU time per request, with the server pinned to core 1 and wrk to
# core 0 (`taskset`); then, once, a fixed-rate run at half the measured
# maximum with `oha --latency-correction` (free of coordinated omission):
# p50, p99, p99.9. Prints a markdown report; with REPORT=FILE also writes
# the figures as TSV for scripts/plot.py.
#
#   bash loadtest/peers.sh
#
# Environment: DURATION (s per saturation run, default 6), ROUNDS (default
# 2), FIXED (s per fixed-rate run, default 8), REPORT, NODE_BIN, WASMTIME,
# OHA, NODE_PORT NODE_ADMIN_PORT NATIVE_PORT (18080 18081 18090; wasmtime
# serve takes NATIVE_PORT + 1).
set -euo pipefail

name=peers
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=loadtest/lib.sh
. "$root/loadtest/lib.sh"

duration=${DURATION:-6}
rounds=${ROUNDS:-2}
fixed=${FIXED:-8}
require_numbers duration rounds fixed node_port admin_port native_port
wasmtime_port=$((native_port + 1))
wasmtime=${WASMTIME:-$(command -v wasmtime || echo "$HOME/.cargo/bin/wasmtime")}
oha=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
for tool in taskset wrk curl bc; do command -v "$tool" >/dev/null || die "$tool not found (bash scripts/setup.sh --bench)"; done

build_all
log "building the example guests (scripts/build-examples.sh)"
bash "$root/scripts/build-examples.sh" "$work/examples" >&2
ports_free "$node_port" "$admin_port" "$native_port" "$wasmtime_port"

# A guest with a 10 MB data segment: copy-on-write should make its size free.
big=$work/big_data.wat
{
  echo '(module'
  echo '  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))'
  echo '  (memory (export "memory") 161)'
  printf '  (data (i32.const 16) "Hello World!\\n")\n'
  printf '  (data (i32.const 65536) "%s")\n' "$(head -c 10485760 /dev/zero | tr '\0' 'x')"
  echo '  (func (export "run") (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const 13)))))'
} >"$big"

printf '[limits]\nmax_upload_bytes = 67108864\n' >"$work/config.toml"
taskset -c 1 true # taskset works here
start_native "$native_port"
native_pid=${pids[-1]}
start_node "$node_port" "$admin_port" "$work/config.toml"
node_pid=${pids[-1]}
for pid in "$native_pid" "$node_pid"; do taskset -a -p -c 1 "$pid" >/dev/null; done
deploy() { curl -fs -o /dev/null -X PUT --data-binary "@$2" "http://127.0.0.1:$admin_port/v1/sites/_default/modules/$1" || die "deploying $1 failed"; }
deploy hello "$root/examples/hello.wat"
deploy wh "$work/examples/wasi-http.wasm"
deploy cgi "$work/examples/c-hello-wasi.wasm"
deploy kv "$root/loadtest/guests/hello_kv.wat"
deploy big "$big"

# target name|url|expected body|pid
targets=(
  "native hyper|http://127.0.0.1:$native_port/hello|Hello World!|$native_pid"
  "node: Terrafirma hello|http://127.0.0.1:$node_port/hello|Hello World!|$node_pid"
  "node: wasi:http hello|http://127.0.0.1:$node_port/wh|Hello, wasi:http!|$node_pid"
  "node: WASI CGI hello (C)|http://127.0.0.1:$node_port/cgi|Hello, world!|$node_pid"
  "node: KV get + insert|http://127.0.0.1:$node_port/kv|Hello World!|$node_pid"
  "node: 10 MB data segment|http://127.0.0.1:$node_port/big|Hello World!|$node_pid"
)
if [ -x "$wasmtime" ]; then
  taskset -c 1 "$wasmtime" serve -Scli --addr "127.0.0.1:$wasmtime_port" "$work/examples/wasi-http.wasm" >"$work/wasmtime.log" 2>&1 &
  pids+=("$!")
  wait_for "http://127.0.0.1:$wasmtime_port/hello" "$!" "wasmtime serve" "$work/wasmtime.log"
  taskset -a -p -c 1 "${pids[-1]}" >/dev/null
  targets+=("wasmtime serve: wasi:http hello|http://127.0.0.1:$wasmtime_port/hello|Hello, wasi:http!|${pids[-1]}")
  wasmtime_note="\`$("$wasmtime" --version)\`"
else
  wasmtime_note="skipped: wasmtime not installed (cargo install wasmtime-cli --version 48.0.8 --locked)"
fi

check() {
  local body
  body=$(curl -fs "$1") || die "$1 did not answer 2xx"
  [ "$body" = "$2" ] || die "$1 answered '$body', not '$2'"
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A rps_runs cpu_runs
for target in "${targets[@]}"; do
  IFS='|' read -r label url expected _ <<<"$target"
  check "$url" "$expected"
  rps_runs[$label]="" cpu_runs[$label]=""
done
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]}"; do
    IFS='|' read -r label url expected pid <<<"$target"
    log "round $round: $label"
    taskset -c 0 timeout 40 wrk -t1 -c32 -d2s "$url" >/dev/null
    before=$(cpu "$pid")
    taskset -c 0 timeout $((duration + 30)) wrk -t1 -c32 --latency -d"${duration}s" "$url" >"$work/wrk.out"
    after=$(cpu "$pid")
    read -r rps _ _ _ bad < <(parse "$work/wrk.out")
    [ "$bad" -eq 0 ] || die "$label: $bad errors or non-2xx answers under load"
    requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    rps_runs[$label]+=" $rps"
    cpu_runs[$label]+=" $(echo "scale=2; ($after - $before) * 1000000 / $(getconf CLK_TCK) / $requests" | bc)"
  done
done

declare -A latency
if [ -x "$oha" ]; then
  for target in "${targets[@]}"; do
    IFS='|' read -r label url expected _ <<<"$target"
    # shellcheck disable=SC2086
    rate=$(echo "$(mean ${rps_runs[$label]}) / 2" | bc)
    log "fixed rate $rate/s: $label"
    taskset -c 0 timeout $((fixed + 30)) "$oha" --no-tui --output-format json -q "$rate" --latency-correction -c 32 -z "${fixed}s" "$url" >"$work/oha.json"
    latency[$label]=$(python3 - "$work/oha.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
codes = report.get("statusCodeDistribution", {})
bad = sum(n for code, n in codes.items() if not code.startswith("2"))
p = report["latencyPercentiles"]
# Requests still in flight when the run's time is up are aborted by oha, not failed.
errors = sum(n for kind, n in report.get("errorDistribution", {}).items() if "deadline" not in kind)
for kind, n in report.get("errorDistribution", {}).items():
    print(f"oha: {n} x {kind}", file=sys.stderr)
print(f'{float(report["summary"]["requestsPerSec"]):.0f} {p["p50"] * 1e3:.3f} {p["p99"] * 1e3:.3f} {p["p99.9"] * 1e3:.3f} {bad + errors}')
PY
)
  done
fi

echo "# Every peer on the same work"
echo
machine_lines
echo "- wasmtime serve: $wasmtime_note"
echo "- saturation: \`wrk -t1 -c32\`, ${duration} s per run, $rounds rounds interleaved; server pinned to core 1, wrk to core 0"
if [ -x "$oha" ]; then echo "- fixed rate: \`oha -q RATE --latency-correction -c 32 -z ${fixed}s\`, RATE = half the mean saturation rate"; else echo "- fixed rate: skipped, oha not installed (cargo install oha --locked)"; fi
echo
echo "| target | requests/s (mean) | × native | server CPU µs/request (mean) | × native | fixed rate /s | p50 ms | p99 ms | p99.9 ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
# shellcheck disable=SC2086
native_rps=$(mean ${rps_runs["native hyper"]}) native_cpu=$(mean ${cpu_runs["native hyper"]})
[ -z "${REPORT:-}" ] || printf 'target\trps\tcpu_us\tfixed_rate\tp50_ms\tp99_ms\tp999_ms\n' >"$REPORT"
for target in "${targets[@]}"; do
  IFS='|' read -r label _ _ _ <<<"$target"
  # shellcheck disable=SC2086
  rps=$(mean ${rps_runs[$label]}) us=$(mean ${cpu_runs[$label]})
  read -r frate p50 p99 p999 bad <<<"${latency[$label]:-- - - - 0}"
  [ "${bad:-0}" = 0 ] || die "$label: $bad failed answers at the fixed rate"
  echo "| $label | $rps | $(echo "scale=3; $rps / $native_rps" | bc) | $us | $(echo "scale=2; $us / $native_cpu" | bc) | $frate | $p50 | $p99 | $p999 |"
  [ -z "${REPORT:-}" ] || printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rps" "$us" "$frate" "$p50" "$p99" "$p999" >>"$REPORT"
done
