#!/usr/bin/env bash
# A fleet on one machine: a three-server NATS JetStream cluster and three
# nodes on loopback, every bucket kept on all three servers (replicas 3).
# Deploys examples/hello.wat to the first node with `terrafirma deploy`,
# then asks all three nodes for it; deploys examples/counter.wat (a KV
# counter) and asks the nodes in turn, each answer one more than the last;
# then keeps everything running until Ctrl-C.
#
#   bash scripts/fleet.sh              # leave the fleet running
#   bash scripts/fleet.sh --exit       # stop after the checks
#   bash scripts/fleet.sh --bench N    # then N deploys, each timed from the
#                                      # upload to all three nodes serving
#                                      # it (p50, p99), and stop
#   bash scripts/fleet.sh --kv-bench S # then KV writes (wrk -c1, their
#                                      # latency) and reads (wrk -c32, their
#                                      # requests/s) on the first node and
#                                      # on a node without a fleet, S
#                                      # seconds each, alternating twice,
#                                      # and stop
#
# Ports: NATS clients 14222-14224, NATS cluster routes 16222-16224, nodes
# 18080/18081, 18090/18091, 18100/18101 (sites/admin). Needs nats-server
# (Debian's package; bash scripts/setup.sh installs it) and a release build.
set -euo pipefail

exit_after=false
bench=0
kv_bench=0
while [ $# -gt 0 ]; do
  case "$1" in
    --exit) exit_after=true ;;
    --bench) bench=${2:?--bench needs a count}; exit_after=true; shift ;;
    --kv-bench) kv_bench=${2:?--kv-bench needs seconds}; exit_after=true; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fleet: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
say() { printf 'fleet: %s\n' "$*"; }
die() { printf 'fleet: error: %s\n' "$*" >&2; exit 1; }
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats" ] || die "nats-server not found (bash scripts/setup.sh installs it)"
bin=target/release/terrafirma
[ -x "$bin" ] || { say "building (cargo build --release)"; cargo build --release; }

work=$(mktemp -d -t terrafirma-fleet.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

routes="nats://127.0.0.1:16222,nats://127.0.0.1:16223,nats://127.0.0.1:16224"
for i in 0 1 2; do
  "$nats" -n "nats-$i" -a 127.0.0.1 -p $((14222 + i)) -js -sd "$work/nats-$i" \
    --cluster_name terrafirma --cluster "nats://127.0.0.1:$((16222 + i))" --routes "$routes" \
    -l "$work/nats-$i.log" &
  pids+=($!)
done
say "NATS JetStream cluster: nats://127.0.0.1:14222, :14223, :14224 (logs in $work)"

for i in 0 1 2; do
  cat >"$work/node-$i.toml" <<TOML
listen = "127.0.0.1:$((18080 + 10 * i))"
admin = "127.0.0.1:$((18081 + 10 * i))"
data = "$work/node-$i"

[fleet]
nats = ["nats://127.0.0.1:14222", "nats://127.0.0.1:14223", "nats://127.0.0.1:14224"]
replicas = 3
TOML
  "$bin" serve --config "$work/node-$i.toml" >"$work/node-$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$((18081 + 10 * i))/healthz" && break; sleep 0.1; done
done
say "nodes: http://127.0.0.1:18080, :18090, :18100 (admin on the next port of each)"

# The cluster elects its JetStream leader in a few seconds; until then a
# deploy is refused with 503.
say "deploying examples/hello.wat to the first node"
deployed=false
for _ in $(seq 1 60); do
  if "$bin" deploy examples/hello.wat --name hello --node http://127.0.0.1:18081 2>"$work/deploy.err"; then
    deployed=true
    break
  fi
  sleep 1
done
$deployed || { cat "$work/deploy.err" >&2; die "the deploy was refused for a minute"; }
for port in 18080 18090 18100; do
  body=""
  for _ in $(seq 1 100); do
    body=$(curl -s "http://127.0.0.1:$port/hello") && [ "$body" = "Hello World!" ] && break
    sleep 0.1
  done
  [ "$body" = "Hello World!" ] || die "node on :$port answered '$body'"
  say "ok: http://127.0.0.1:$port/hello answered '$body'"
done
say "deploying examples/counter.wat (a counter in the site's KV store) to the second node"
"$bin" deploy examples/counter.wat --name counter --node http://127.0.0.1:18091 >/dev/null
for port in 18080 18090 18100; do
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/counter/warm" && break; sleep 0.1; done
done
expected=1
for round in 1 2; do
  for port in 18080 18090 18100; do
    body=$(curl -s "http://127.0.0.1:$port/counter")
    [ "$body" = "$expected" ] || die "node on :$port counted '$body', not $expected"
    say "ok: http://127.0.0.1:$port/counter answered $body"
    expected=$((expected + 1))
  done
done

if [ "$kv_bench" -gt 0 ]; then
  command -v wrk >/dev/null || die "wrk not found (bash scripts/setup.sh --bench)"
  "$bin" serve --listen 127.0.0.1:18110 --admin 127.0.0.1:18111 --data "$work/alone" >"$work/alone.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:18111/healthz" && break; sleep 0.1; done
  for admin in 18081 18111; do
    curl -sf -X PUT --data-binary @tests/fixtures/kv.wat "http://127.0.0.1:$admin/v1/sites/_default/modules/kv" >/dev/null
  done
  cat >"$work/put.lua" <<'LUA'
wrk.method = "PUT"
wrk.body = "a value of some thirty-two bytes"
LUA
  for port in 18080 18110; do
    for _ in $(seq 1 100); do [ "$(curl -s -X PUT --data 'x' "http://127.0.0.1:$port/kv/warm")" = 1 ] && break; sleep 0.1; done
    [ "$(curl -s -X PUT --data 'v' "http://127.0.0.1:$port/kv/key")" = 1 ] || die "the KV guest on :$port did not write"
    [ "$(curl -s "http://127.0.0.1:$port/kv/key")" = 1v ] || die "the KV guest on :$port did not read its write"
  done
  wrk_run() { # PORT CONNECTIONS [wrk arguments]: its output; no errors or non-2xx allowed
    local port=$1 connections=$2 out; shift 2
    out=$(wrk -t1 -c"$connections" -d"${kv_bench}s" --latency "$@" "http://127.0.0.1:$port/kv/key")
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "$out" >&2; die "wrk saw errors on :$port"; fi
    echo "$out"
  }
  for round in 1 2; do
    for which in fleet alone; do
      port=18080; [ "$which" = alone ] && port=18110
      write=$(wrk_run "$port" 1 -s "$work/put.lua")
      read=$(wrk_run "$port" 32)
      say "round $round, $which: KV write latency p50 $(awk '$1 == "50%" {print $2}' <<<"$write"), p99 $(awk '$1 == "99%" {print $2}' <<<"$write") ($(awk '/Requests\/sec/ {print $2}' <<<"$write") writes/s at -c1); KV read $(awk '/Requests\/sec/ {print $2}' <<<"$read") requests/s at -c32, p50 $(awk '$1 == "50%" {print $2}' <<<"$read")"
    done
  done
  [ "$(curl -s "http://127.0.0.1:18090/kv/key")" = "1a value of some thirty-two bytes" ] || die "the second node does not read the first one's writes"
  say "ok: the second node reads the value the first one wrote"
fi

if [ "$bench" -gt 0 ]; then
  say "timing $bench deploys of a small module: upload to node 1 until nodes 1, 2 and 3 all serve it"
  python3 - "$bench" <<'PY'
import http.client, statistics, sys, time
rounds = int(sys.argv[1])
def module(text):
    return f"""(module
  (import "env" "hostcall_resp_set_body" (func $set_body (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{text}")
  (func (export "run") (drop (call $set_body (i32.const 0) (i32.const 16) (i32.const {len(text)})))))""".encode()
def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    return resp.status, resp.read().decode()
times = []
for i in range(rounds):
    text = f"version {i} {time.time_ns()}"
    started = time.monotonic()
    status, answer = request(18081, "PUT", "/v1/sites/_default/modules/bench", module(text))
    assert status in (200, 201), answer
    waiting = {18080, 18090, 18100}
    while waiting:
        for port in list(waiting):
            if request(port, "GET", "/bench") == (200, text):
                waiting.discard(port)
        time.sleep(0.001)
    times.append(time.monotonic() - started)
times.sort()
p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
print(f"deploy -> served by all 3 nodes over {rounds} deploys: p50 {statistics.median(times) * 1000:.0f} ms, "
      f"p99 {p99 * 1000:.0f} ms, worst {times[-1] * 1000:.0f} ms")
PY
fi
if $exit_after; then
  exit 0
fi
say "running; Ctrl-C stops the nodes and the servers"
wait
