#!/usr/bin/env bash
# The request path against native hyper, side by side on one machine: the
# native hello (loadtest/native-hello), the node's 404 path (routing, no
# guest) and the node's hello, each pinned to core 1 with wrk on core 0
# (`wrk -t1 -c32`), rounds alternating. Per run: requests/s, the server's
# CPU per request (every thread's utime + stime from /proc/PID/task/*/stat,
# and the two apart)
# and, from `perf stat`, context switches and page faults per request.
#
#   bash loadtest/breakdown.sh [NODE_BIN]
#
# Environment: DURATION (seconds per run, default 5), ROUNDS (default 2).
# Ports 28080/28081 (node) and 28090 (native). Needs wrk, perf, bc, and
# loadtest/native-hello built (cargo build --release in that folder).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/terrafirma} dur=${DURATION:-5} rounds=${ROUNDS:-2}
data=$(mktemp -d)
taskset -c 1 "$bin" serve --listen 127.0.0.1:28080 --admin 127.0.0.1:28081 --data "$data" >"$data.log" 2>&1 &
node=$!
taskset -c 1 loadtest/native-hello/target/release/native-hello 28090 >/dev/null 2>&1 &
native=$!
trap 'kill $node $native 2>/dev/null; wait 2>/dev/null; rm -rf $data $data.log' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:28081/healthz && curl -fs -o /dev/null http://127.0.0.1:28090/ && break; sleep 0.1; done
taskset -a -p -c 1 $node >/dev/null; taskset -a -p -c 1 $native >/dev/null
curl -fs -o /dev/null -X PUT --data-binary @tests/fixtures/hello.wat http://127.0.0.1:28081/v1/sites/_default/modules/hello
[ "$(curl -fs http://127.0.0.1:28080/hello)" = "Hello World!" ] || { echo "breakdown: the node's hello did not answer" >&2; exit 1; }
[ -n "$(curl -fs http://127.0.0.1:28090/)" ] || { echo "breakdown: native-hello did not answer" >&2; exit 1; }
hz=$(getconf CLK_TCK)
# cpu PID: every thread's user and system ticks, "USER SYS".
cpu() { awk '{ u += $14; s += $15 } END { print u, s }' /proc/$1/task/*/stat; }
run() {
  local pid=$1 url=$2 name=$3
  taskset -c 0 wrk -t1 -c32 -d1s $url >/dev/null
  local before; before=$(cpu $pid)
  perf stat -e task-clock,context-switches,page-faults,cpu-migrations -p $pid -o $data/perf.$name -- sleep $dur >/dev/null 2>&1 &
  local perfpid=$!
  local out=$(taskset -c 0 wrk -t1 -c32 -d${dur}s $url)
  wait $perfpid || true
  local after; after=$(cpu $pid)
  local req=$(awk '/requests in/ {print $1}' <<<"$out")
  local rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local per=$(awk -v r=$req '/context-switches|page-faults/ {gsub(",","",$1); printf "%s=%.3f ", $2, $1/r}' $data/perf.$name)
  local us; us=$(awk -v b="$before" -v a="$after" -v hz=$hz -v r=$req 'BEGIN { split(b, x, " "); split(a, y, " "); u = (y[1]-x[1])*1e6/hz/r; s = (y[2]-x[2])*1e6/hz/r; printf "cpu_us=%.2f user_us=%.2f sys_us=%.2f", u+s, u, s }')
  echo "$name rps=$rps $us per_req: $per"
}
for _ in $(seq "$rounds"); do
  run $native http://127.0.0.1:28090/ native
  run $node http://127.0.0.1:28080/nothing node-404
  run $node http://127.0.0.1:28080/hello node-hello
done
