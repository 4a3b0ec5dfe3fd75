#!/usr/bin/env bash
# Instructions per request, the figure that does not move with the machine's
# speed: the node runs under valgrind's callgrind (user-space instructions
# only; the kernel's share of a request is the same syscalls whatever the
# node does), the hello guest is deployed, the Cranelift upgrade awaited,
# then `wrk -t1 -c2` runs for SECONDS and the instructions counted over the
# run are divided by the requests wrk counted. Loopback only, bounded.
#
#   bash loadtest/instructions.sh NODE_BIN [PATH] [EXPECTED]
#
# PATH defaults to /hello (tests/fixtures/hello.wat), EXPECTED to its body.
# Environment: SECONDS_RUN (default 8), PORT/ADMIN_PORT (28080/28081), and
# whatever the node should see (e.g. TF_NOOPS=1 for a build made with
# loadtest/patches/operations-switch.patch). Keep a profile with KEEP=FILE
# (read it with `callgrind_annotate --inclusive=yes FILE`).
# Prints one line: binary, path, requests, instructions per request.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
bin=$1 path=${2:-/hello} expected=${3:-Hello World!}
secs=${SECONDS_RUN:-8} port=${PORT:-28080} admin=${ADMIN_PORT:-28081}
for tool in valgrind callgrind_control callgrind_annotate wrk curl; do
  command -v "$tool" >/dev/null || { echo "instructions: $tool not found (apt-get install valgrind wrk curl)" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
work=$(mktemp -d)
# valgrind cannot reserve the default pool's address space.
printf '[pool]\ninstances = 8\n' >"$work/config.toml"
valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$work/out.%p" \
  "$bin" serve --config "$work/config.toml" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --data "$work/data" >"$work/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 240); do curl -fs -o /dev/null "http://127.0.0.1:$admin/healthz" && break; sleep 0.5; done
curl -fs -o /dev/null -X PUT --data-binary @tests/fixtures/hello.wat "http://127.0.0.1:$admin/v1/sites/_default/modules/hello"
for _ in $(seq 240); do grep -q "now serves" "$work/log" && break; sleep 0.5; done
grep -q "now serves" "$work/log" || { echo "instructions: the Cranelift upgrade never finished" >&2; exit 1; }
body=$(curl -fs "http://127.0.0.1:$port$path")
[ "$body" = "$expected" ] || { echo "instructions: $path answered '$body', not '$expected'" >&2; exit 1; }
wrk -t1 -c2 -d3s "http://127.0.0.1:$port$path" >/dev/null
callgrind_control --zero "$pid" >/dev/null 2>&1
out=$(wrk -t1 -c2 -d"${secs}s" "http://127.0.0.1:$port$path")
if grep -q "Non-2xx" <<<"$out"; then echo "instructions: wrk saw non-2xx answers" >&2; exit 1; fi
requests=$(awk '/requests in/ {print $1}' <<<"$out")
rm -f "$work"/out.*
callgrind_control --dump "$pid" >/dev/null 2>&1
sleep 1
profile=$(ls -t "$work"/out.* | head -1)
total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
[ -n "${KEEP:-}" ] && cp "$profile" "$KEEP"
echo "$(basename "$bin") $path requests=$requests instructions_per_req=$((total / requests))"
