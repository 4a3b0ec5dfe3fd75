#!/usr/bin/env bash
# The server's CPU time per request, the figure that moves least on a shared
# machine: the node pinned to core 1 (`taskset -a`), wrk pinned to core 0,
# `wrk -t1 -c32`, the node's user + system time from /proc/PID/stat over the
# measured run divided by the requests wrk counted. Loopback only, bounded.
#
#   bash loadtest/pinned.sh NODE_BIN GUEST PATH EXPECTED [NAME]
#     NODE_BIN  a terrafirma binary (e.g. target/release/terrafirma, or an
#               earlier commit's build, for a side-by-side comparison)
#     GUEST     the module to deploy as NAME (default `hello`), .wat or .wasm
#     PATH      the request path, e.g. /hello
#     EXPECTED  the exact body every answer must have (checked once with
#               curl; wrk must see no non-2xx answer)
#
# Environment: DURATION (seconds, default 6), PORT/ADMIN_PORT (28080/28081),
# CONFIG (a node config file to pass with --config).
# Prints one line: binary, path, requests/s, CPU microseconds per request.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
bin=$1 guest=$2 path=$3 expected=$4 name=${5:-hello}
duration=${DURATION:-6} port=${PORT:-28080} admin=${ADMIN_PORT:-28081}
for tool in taskset wrk curl; do command -v "$tool" >/dev/null || { echo "pinned: $tool not found (bash scripts/setup.sh --bench)" >&2; exit 1; }; done
data=$(mktemp -d)
taskset -c 1 "$bin" serve ${CONFIG:+--config "$CONFIG"} --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --data "$data" >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$admin/healthz" && break; sleep 0.1; done
taskset -a -p -c 1 "$pid" >/dev/null
curl -fs -o /dev/null -X PUT --data-binary "@$guest" "http://127.0.0.1:$admin/v1/sites/_default/modules/$name"
body=$(curl -fs "http://127.0.0.1:$port$path")
[ "$body" = "$expected" ] || { echo "pinned: $path answered '$body', not '$expected'" >&2; exit 1; }
taskset -c 0 wrk -t1 -c32 -d2s "http://127.0.0.1:$port$path" >/dev/null
before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
out=$(taskset -c 0 wrk -t1 -c32 -d"${duration}s" "http://127.0.0.1:$port$path")
after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
if grep -q "Non-2xx" <<<"$out"; then echo "pinned: wrk saw non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
requests=$(awk '/requests in/ {print $1}' <<<"$out")
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
hz=$(getconf CLK_TCK)
echo "$(basename "$bin") $path rps=$rps cpu_us_per_req=$(echo "scale=2; ($after - $before) * 1000000 / $hz / $requests" | bc)"
