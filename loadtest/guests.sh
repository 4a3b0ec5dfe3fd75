#!/usr/bin/env bash
# What one request costs the node, guest by guest: the WAT hello
# (examples/hello.wat), the same plus a KV get and insert
# (loadtest/guests/hello_kv.wat), and the Rust and C hello examples built by
# scripts/build-examples.sh, all on one node, each loaded in turn by
# `wrk -t1 -c32`, in interleaved rounds. Besides requests/s it reports the
# node's CPU time per request (user + system, from /proc/PID/stat, over the
# middle of each run), which moves much less than requests/s when the
# machine is shared. Prints a markdown table.
#
#   bash loadtest/guests.sh
#
# Environment:
#   DURATION     seconds per run, at least 4     (default 6)
#   ROUNDS       rounds over all guests          (default 2)
#   CONNECTIONS  wrk -c                          (default 32)
#   NODE_PORT NODE_ADMIN_PORT                    (default 18080 18081)
set -euo pipefail

name=guests
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=loadtest/lib.sh
. "$root/loadtest/lib.sh"

duration=${DURATION:-6}
rounds=${ROUNDS:-2}
connections=${CONNECTIONS:-32}
require_numbers duration rounds connections node_port admin_port
[ "$duration" -ge 4 ] || die "DURATION must be at least 4 (CPU is sampled between its first and last second)"
[ "$rounds" -ge 1 ] || die "ROUNDS must be at least 1"

build_all
log "building the example guests (scripts/build-examples.sh)"
bash "$root/scripts/build-examples.sh" "$work/examples" >&2
ports_free "$node_port" "$admin_port"
: >"$work/config.toml"
start_node "$node_port" "$admin_port" "$work/config.toml"
node_pid=${pids[-1]}

guests=(hello hello_kv rust-hello c-hello)
declare -A source=(
  [hello]=$root/examples/hello.wat
  [hello_kv]=$root/loadtest/guests/hello_kv.wat
  [rust-hello]=$work/examples/rust-hello.wasm
  [c-hello]=$work/examples/c-hello.wasm
)
for guest in "${guests[@]}"; do
  "$node_bin" deploy "${source[$guest]}" --name "$guest" --node "http://127.0.0.1:$admin_port" >/dev/null
  body=$(curl -s --max-time 5 "http://127.0.0.1:$node_port/$guest") || die "no answer from /$guest"
  [ "$body" = "Hello World!" ] || die "/$guest answered '$body', expected 'Hello World!'"
done

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$node_pid/stat"; }

# measure GUEST OUTFILE: wrk in the background; CPU sampled from its first
# to its last second. Prints "rps cpu_percent us_per_request p99 errors".
measure() {
  local url=http://127.0.0.1:$node_port/$1 out=$2 t0 t1 c0 c1 rps p99 bad
  timeout --kill-after=5 "$((duration + 30))" wrk -t1 "-c$connections" --latency "-d${duration}s" "$url" >"$out" &
  wrk_pid=$!
  sleep 1
  c0=$(cpu_ticks); t0=$(date +%s.%N)
  sleep "$((duration - 2))"
  c1=$(cpu_ticks); t1=$(date +%s.%N)
  wait "$wrk_pid" || { cat "$out" >&2; die "wrk failed against $url"; }
  read -r rps _ _ p99 bad < <(parse "$out")
  awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$ticks" -v rps="$rps" -v p99="$p99" -v bad="$bad" 'BEGIN {
    cpu = (c1 - c0) / hz / (t1 - t0)
    printf "%s %.0f %.1f %s %d\n", rps, cpu * 100, (rps > 0 ? cpu / rps * 1e6 : 0), p99, bad
  }'
}

log "warming up, 2 s each"
for guest in "${guests[@]}"; do
  run_wrk 2 "$connections" "$work/warmup-$guest.txt" "http://127.0.0.1:$node_port/$guest"
done

rows=""
declare -A all_rps all_us
for round in $(seq 1 "$rounds"); do
  for guest in "${guests[@]}"; do
    log "round $round/$rounds: $guest, ${duration}s"
    read -r rps cpu us p99 bad < <(measure "$guest" "$work/round$round-$guest.txt")
    [ "$bad" -eq 0 ] || log "warning: $guest had $bad errors or non-2xx answers in round $round"
    all_rps[$guest]+="$rps "
    all_us[$guest]+="$us "
    rows+="| $round | $guest | $rps | $cpu % | $us | $p99 | $bad |"$'\n'
  done
done

cat <<EOF
## Guests: requests/s and the node's CPU per request

$(machine_lines)
- wrk: \`wrk -t1 -c$connections -d${duration}s --latency\`, one guest at a time, rounds interleaved
- CPU: the node's user + system time over seconds 1 to $((duration - 1)) of each run, divided by requests

| round | guest | requests/s | node CPU | CPU µs / request | p99 | errors + non-2xx |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
${rows}
| guest | mean requests/s | median CPU µs / request |
| --- | ---: | ---: |
EOF
for guest in "${guests[@]}"; do
  # shellcheck disable=SC2086 # the lists are space-separated numbers
  printf '| %s | %s | %s |\n' "$guest" "$(mean ${all_rps[$guest]})" "$(median ${all_us[$guest]})"
done
