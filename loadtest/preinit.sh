#!/usr/bin/env bash
# Pre-initialised images against `_initialize` on every request, side by
# side on one node: the C guest examples/c/primes.c (a constructor sieves a
# million numbers; a request reads the tables) deployed to `_default`
# (snapshotted at upload) and to `slow.test`, a site with `preinitialize =
# false`. Rounds alternate between the two. The node is pinned to core 1,
# wrk to core 0, `wrk -t1 -c32`; the node's CPU time over each run is read
# from /proc/PID/stat and divided by the requests wrk counted.
#
#   bash loadtest/preinit.sh [GUEST.wasm]
#
# GUEST defaults to target/examples/c-primes.wasm (bash
# scripts/build-examples.sh). Environment: DURATION (seconds per run,
# default 6), ROUNDS (default 2), PORT/ADMIN_PORT (28080/28081), NODE_BIN.
# Every answer is checked once with curl; wrk must see no non-2xx answer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
guest=${1:-$root/target/examples/c-primes.wasm}
bin=${NODE_BIN:-$root/target/release/terrafirma}
duration=${DURATION:-6} rounds=${ROUNDS:-2} port=${PORT:-28080} admin=${ADMIN_PORT:-28081}
for tool in taskset wrk curl bc; do command -v "$tool" >/dev/null || { echo "preinit: $tool not found (bash scripts/setup.sh --bench)" >&2; exit 1; }; done
[ -f "$guest" ] || { echo "preinit: $guest not found (bash scripts/build-examples.sh)" >&2; exit 1; }
data=$(mktemp -d)
cat >"$data.toml" <<TOML
[sites."slow.test"]
preinitialize = false
TOML
taskset -c 1 "$bin" serve --config "$data.toml" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --data "$data" >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$data.log" "$data.toml"' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$admin/healthz" && break; sleep 0.1; done
taskset -a -p -c 1 "$pid" >/dev/null
for site in _default slow.test; do
  answer=$(curl -fs -X PUT --data-binary "@$guest" "http://127.0.0.1:$admin/v1/sites/$site/modules/primes")
  echo "preinit: $site: $(grep -o '"initialization":"[a-z-]*"' <<<"$answer")"
done
expected="78498 primes up to 1000000"
for host in localhost slow.test; do
  body=$(curl -fs -H "Host: $host" "http://127.0.0.1:$port/primes")
  [ "$body" = "$expected" ] || { echo "preinit: $host answered '$body', not '$expected'" >&2; exit 1; }
done
hz=$(getconf CLK_TCK)
measure() {
  local host=$1 before after out requests rps
  taskset -c 0 wrk -t1 -c32 -d1s -H "Host: $host" "http://127.0.0.1:$port/primes" >/dev/null
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 0 wrk -t1 -c32 -d"${duration}s" -H "Host: $host" "http://127.0.0.1:$port/primes")
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  if grep -q "Non-2xx" <<<"$out"; then echo "preinit: wrk saw non-2xx answers from $host" >&2; echo "$out" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  echo "$rps $(echo "scale=2; ($after - $before) * 1000000 / $hz / $requests" | bc)"
}
sum_fast=0 sum_slow=0
for round in $(seq "$rounds"); do
  read -r fast_rps fast_cpu <<<"$(measure localhost)"
  read -r slow_rps slow_cpu <<<"$(measure slow.test)"
  echo "round $round: snapshot rps=$fast_rps cpu_us_per_req=$fast_cpu | per-request rps=$slow_rps cpu_us_per_req=$slow_cpu"
  sum_fast=$(echo "$sum_fast + $fast_rps" | bc) sum_slow=$(echo "$sum_slow + $slow_rps" | bc)
done
echo "snapshot / per-request requests/s: $(echo "scale=2; $sum_fast / $sum_slow" | bc)"
