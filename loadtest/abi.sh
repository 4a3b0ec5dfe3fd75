#!/usr/bin/env bash
# What the ABI's heavier hostcalls cost a request, measured side by side on
# one node, loopback only. Prints a markdown report.
#
#  1. KV: loadtest/guests/hello_kv.wat (examples/hello.wat plus one
#     hostcall_kvstore_get and one hostcall_kvstore_insert) against
#     examples/hello.wat, requests/s at wrk -cCONNECTIONS; examples/counter.wat
#     (path, get, decimal increment, insert, header) for reference. Target:
#     hello_kv keeps at least 80 % of hello's rate.
#  2. Outbound: examples/fetch.wat fetching native-hello's page through
#     hostcall_req_create + req_send, against hello.wat and against
#     native-hello itself, p50 latency at wrk -c1. Target: fetch p50 - hello
#     p50 is at most the upstream's own p50 + 100 us.
#
#   bash loadtest/abi.sh
#
# Environment:
#   DURATION     seconds per measured run            (default 8)
#   ROUNDS       interleaved rounds                  (default 2)
#   WARMUP       seconds of warm-up per target       (default 2)
#   CONNECTIONS  wrk -c of part 1                    (default 32)
#   NODE_PORT NODE_ADMIN_PORT NATIVE_PORT            (default 18080 18081 18090)
set -euo pipefail

name=abi
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=loadtest/lib.sh
. "$root/loadtest/lib.sh"

duration=${DURATION:-8}
rounds=${ROUNDS:-2}
warmup=${WARMUP:-2}
connections=${CONNECTIONS:-32}
require_numbers duration rounds warmup connections node_port admin_port native_port
if [ "$duration" -lt 1 ] || [ "$rounds" -lt 1 ]; then
  die "DURATION and ROUNDS must be at least 1"
fi

node=http://127.0.0.1:$node_port
upstream=http://127.0.0.1:$native_port/hello
declare -A url=(
  [native]=$upstream
  [hello]=$node/hello
  [counter]=$node/counter
  [hello_kv]=$node/hello_kv
  [fetch]="$node/fetch?url=$upstream"
)

build_all
ports_free "$node_port" "$admin_port" "$native_port"
printf '[limits]\noutbound_hosts = ["127.0.0.1:%s"]\n' "$native_port" >"$work/config.toml"
start_node "$node_port" "$admin_port" "$work/config.toml"
start_native "$native_port"
for guest in examples/hello examples/counter examples/fetch loadtest/guests/hello_kv; do
  log "deploying $guest.wat"
  "$node_bin" deploy "$root/$guest.wat" --name "${guest##*/}" --node "http://127.0.0.1:$admin_port" >&2
done
[ "$(curl -s --max-time 5 "${url[hello_kv]}")" = "Hello World!" ] || die "hello_kv did not answer"
[ "$(curl -s --max-time 5 "${url[fetch]}")" = "Hello World!" ] || die "fetch did not relay the upstream's answer"
[ "$(curl -s --max-time 5 "${url[counter]}")" = "1" ] || die "counter did not answer 1"

# measure PART CONNECTIONS TARGET...: interleaved rounds; fills
# rps_TARGET / p50_TARGET arrays and the part's table rows.
rows=""
measure() {
  local part=$1 conns=$2 round target out rps avg p50 p99 bad
  shift 2
  if [ "$warmup" -gt 0 ]; then
    for target in "$@"; do
      run_wrk "$warmup" "$conns" "$work/warmup-$target.txt" "${url[$target]}"
    done
  fi
  for round in $(seq 1 "$rounds"); do
    for target in "$@"; do
      out=$work/$part-$round-$target.txt
      log "part $part, round $round/$rounds: $target, -c$conns, ${duration}s"
      run_wrk "$duration" "$conns" "$out" "${url[$target]}" || { cat "$out" >&2; die "wrk failed on $target"; }
      read -r rps avg p50 p99 bad < <(parse "$out")
      [ "$bad" -eq 0 ] || log "warning: $target had $bad errors or non-2xx answers"
      eval "rps_$target+=(\"$rps\"); p50_$target+=(\"$(micros "$p50")\")"
      rows+="| $part | $round | $target | -c$conns | $rps | $avg | $p50 | $p99 | $bad |"$'\n'
    done
  done
}

rps_hello=() rps_hello_kv=() rps_counter=() rps_native=() rps_fetch=()
p50_hello=() p50_hello_kv=() p50_counter=() p50_native=() p50_fetch=()
measure 1 "$connections" hello hello_kv counter
hello_rps=$(mean "${rps_hello[@]}")
hello_kv_rps=$(mean "${rps_hello_kv[@]}")
counter_rps=$(mean "${rps_counter[@]}")
kv_ratio=$(awk -v a="$hello_kv_rps" -v b="$hello_rps" 'BEGIN { printf "%.3f", a / b }')
counter_ratio=$(awk -v a="$counter_rps" -v b="$hello_rps" 'BEGIN { printf "%.3f", a / b }')

rps_hello=() p50_hello=()
measure 2 1 native hello fetch
native_p50=$(median "${p50_native[@]}")
hello_p50=$(median "${p50_hello[@]}")
fetch_p50=$(median "${p50_fetch[@]}")
added=$(awk -v f="$fetch_p50" -v h="$hello_p50" 'BEGIN { printf "%.1f", f - h }')
beyond=$(awk -v a="$added" -v n="$native_p50" 'BEGIN { printf "%.1f", a - n }')

cat <<EOF2
## Hostcall costs: KV get + insert, outbound fetch

$(machine_lines)
- command: \`wrk -t1 -cN --latency -d${duration}s URL\`, ${rounds} interleaved rounds per part after ${warmup}s warm-up per target; node and wrk share the machine, loopback
- node: \`terrafirma serve\`, defaults plus \`outbound_hosts = ["127.0.0.1:$native_port"]\`; guests \`examples/{hello,counter,fetch}.wat\` and \`loadtest/guests/hello_kv.wat\`; upstream \`loadtest/native-hello\`

| part | round | target | wrk | requests/s | latency avg | p50 | p99 | errors + non-2xx |
| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |
${rows%$'\n'}

| measure | value | target |
| --- | ---: | --- |
| KV: hello_kv / hello requests/s (means $hello_kv_rps / $hello_rps) | $kv_ratio | ≥ 0.800 |
| KV, for reference: counter / hello requests/s (mean $counter_rps) | $counter_ratio | |
| outbound: fetch p50 − hello p50 (medians $fetch_p50 µs − $hello_p50 µs) | $added µs | ≤ upstream p50 + 100 µs |
| upstream (native-hello) p50, median | $native_p50 µs | |
| outbound: added beyond the upstream's own p50 | $beyond µs | ≤ 100 µs |
EOF2
