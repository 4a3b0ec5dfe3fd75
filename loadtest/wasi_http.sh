#!/usr/bin/env bash
# The node against `wasmtime serve` on the same wasi:http component
# (examples/wasi-http, its hello path), in alternating rounds, on loopback.
# Each server is pinned to core 1 and wrk to core 0; per run: requests/s of
# `wrk -t1 -c32` and the server's CPU time per request (user + system from
# /proc/PID/stat over the run). Every server's answer is checked first, and
# a run with non-2xx answers fails. Prints a markdown table.
#
#   bash loadtest/wasi_http.sh
#
# Environment:
#   DURATION   seconds per measured run     (default 8)
#   ROUNDS     rounds of node + wasmtime    (default 2)
#   WASMTIME   the wasmtime binary          (default: wasmtime on PATH or in ~/.cargo/bin)
#   NODE_PORT NODE_ADMIN_PORT NATIVE_PORT   (default 18080 18081 18090; NATIVE_PORT serves wasmtime)
set -euo pipefail

name=wasi_http
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=loadtest/lib.sh
. "$root/loadtest/lib.sh"

duration=${DURATION:-8}
rounds=${ROUNDS:-2}
require_numbers duration rounds node_port admin_port native_port
wasmtime=${WASMTIME:-$(command -v wasmtime || echo "$HOME/.cargo/bin/wasmtime")}
[ -x "$wasmtime" ] || die "wasmtime not found: cargo install wasmtime-cli --version 48.0.8 --locked (or set WASMTIME)"
for tool in taskset wrk curl bc; do command -v "$tool" >/dev/null || die "$tool not found (bash scripts/setup.sh --bench)"; done

build_all
log "building the example guests (scripts/build-examples.sh)"
bash "$root/scripts/build-examples.sh" "$work/examples" >&2
component=$work/examples/wasi-http.wasm
expected='Hello, wasi:http!'
ports_free "$node_port" "$admin_port" "$native_port"

# The node, with the component deployed as `hello`.
: >"$work/config.toml"
taskset -c 1 "$node_bin" serve --listen "127.0.0.1:$node_port" --admin "127.0.0.1:$admin_port" --data "$work/data" >"$work/node.log" 2>&1 &
node_pid=$!
pids+=("$node_pid")
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$admin_port/healthz" && break; sleep 0.1; done
taskset -a -p -c 1 "$node_pid" >/dev/null
curl -fs -o /dev/null -X PUT --data-binary "@$component" "http://127.0.0.1:$admin_port/v1/sites/_default/modules/hello"
# wasmtime serve, with the WASI CLI interfaces Rust's std imports.
taskset -c 1 "$wasmtime" serve -Scli --addr "127.0.0.1:$native_port" "$component" >"$work/wasmtime.log" 2>&1 &
wasmtime_pid=$!
pids+=("$wasmtime_pid")
for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$native_port/hello" && break; sleep 0.1; done
taskset -a -p -c 1 "$wasmtime_pid" >/dev/null

check() {
  local body
  body=$(curl -fs "$1")
  [ "$body" = "$expected" ] || die "$1 answered '$body', not '$expected'"
}
node_url=http://127.0.0.1:$node_port/hello
wasmtime_url=http://127.0.0.1:$native_port/hello
check "$node_url"
check "$wasmtime_url"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A rps_sum cpu_sum
rps_sum=([node]=0 [wasmtime]=0) cpu_sum=([node]=0 [wasmtime]=0)
rows=""
for round in $(seq 1 "$rounds"); do
  for server in node wasmtime; do
    if [ "$server" = node ]; then url=$node_url pid=$node_pid; else url=$wasmtime_url pid=$wasmtime_pid; fi
    taskset -c 0 wrk -t1 -c32 -d2s "$url" >/dev/null
    before=$(cpu "$pid")
    out=$(taskset -c 0 wrk -t1 -c32 -d"${duration}s" "$url")
    after=$(cpu "$pid")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then die "$server: wrk saw errors: $out"; fi
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    us=$(echo "scale=2; ($after - $before) * 1000000 / $(getconf CLK_TCK) / $requests" | bc)
    rps_sum[$server]=$(echo "${rps_sum[$server]} + $rps" | bc)
    cpu_sum[$server]=$(echo "${cpu_sum[$server]} + $us" | bc)
    rows+="| $round | $server | $rps | $us |"$'\n'
  done
done
check "$node_url"
check "$wasmtime_url"

node_rps=$(echo "scale=2; ${rps_sum[node]} / $rounds" | bc)
wasmtime_rps=$(echo "scale=2; ${rps_sum[wasmtime]} / $rounds" | bc)
node_cpu=$(echo "scale=2; ${cpu_sum[node]} / $rounds" | bc)
wasmtime_cpu=$(echo "scale=2; ${cpu_sum[wasmtime]} / $rounds" | bc)
echo
echo "wasi:http hello (examples/wasi-http), node vs \`$("$wasmtime" --version)\` serve, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$root" rev-parse --short HEAD)"
echo
echo "| round | server | requests/s | server CPU µs per request |"
echo "| --- | --- | ---: | ---: |"
printf '%s' "$rows"
echo
echo "| | node | wasmtime serve | node / wasmtime |"
echo "| --- | ---: | ---: | ---: |"
echo "| mean requests/s | $node_rps | $wasmtime_rps | $(echo "scale=2; $node_rps / $wasmtime_rps" | bc) |"
echo "| mean CPU µs per request | $node_cpu | $wasmtime_cpu | $(echo "scale=3; $node_cpu / $wasmtime_cpu" | bc) |"
