#!/usr/bin/env bash
# Node vs native: the same "Hello World!\n" served by Terrafirma (guest
# examples/hello.wat, a fresh sandboxed instance per request) and by a plain
# hyper server (loadtest/native-hello), loaded by wrk with the same settings,
# in alternating rounds, on loopback only. Prints a markdown table.
#
#   bash loadtest/compare.sh
#
# Environment:
#   DURATION     seconds per measured run            (default 10)
#   ROUNDS       native+node pairs, interleaved      (default 2)
#   WARMUP       seconds of warm-up per server       (default 2)
#   THREADS      wrk -t                              (default 1)
#   CONNECTIONS  wrk -c                              (default 32)
#   PREWARM      the node's pool.prewarm             (default 0, the node's default)
#   NODE_PORT NODE_ADMIN_PORT NATIVE_PORT            (default 18080 18081 18090)
set -euo pipefail

name=compare
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=loadtest/lib.sh
. "$root/loadtest/lib.sh"

duration=${DURATION:-10}
rounds=${ROUNDS:-2}
warmup=${WARMUP:-2}
threads=${THREADS:-1}
connections=${CONNECTIONS:-32}
prewarm=${PREWARM:-0}
require_numbers duration rounds warmup threads connections prewarm node_port admin_port native_port
if [ "$duration" -lt 1 ] || [ "$rounds" -lt 1 ]; then
  die "DURATION and ROUNDS must be at least 1"
fi

node_url=http://127.0.0.1:$node_port/hello
native_url=http://127.0.0.1:$native_port/hello

build_all
ports_free "$node_port" "$admin_port" "$native_port"
printf '[pool]\nprewarm = %s\n' "$prewarm" >"$work/config.toml"
start_node "$node_port" "$admin_port" "$work/config.toml"
start_native "$native_port"

log "deploying examples/hello.wat"
"$node_bin" deploy "$root/examples/hello.wat" --name hello --node "http://127.0.0.1:$admin_port" >&2
for url in "$native_url" "$node_url"; do
  body=$(curl -s --max-time 5 "$url") || die "no answer from $url"
  [ "$body" = "Hello World!" ] || die "$url answered '$body', expected 'Hello World!'"
done

log "warming up, ${warmup}s each"
if [ "$warmup" -gt 0 ]; then
  run_wrk "$warmup" "$connections" "$work/warmup-native.txt" "$native_url"
  run_wrk "$warmup" "$connections" "$work/warmup-node.txt" "$node_url"
fi

rows=""
native_rps=()
node_rps=()
for round in $(seq 1 "$rounds"); do
  for server in native node; do
    if [ "$server" = native ]; then url=$native_url; else url=$node_url; fi
    out=$work/round$round-$server.txt
    log "round $round/$rounds: $server, ${duration}s"
    run_wrk "$duration" "$connections" "$out" "$url" || { cat "$out" >&2; die "wrk failed against $url"; }
    read -r rps avg p50 p99 bad < <(parse "$out")
    if [ "$server" = native ]; then native_rps+=("$rps"); else node_rps+=("$rps"); fi
    [ "$bad" -eq 0 ] || log "warning: $server had $bad errors or non-2xx answers in round $round; its rate is not comparable"
    rows+="| $round | $server | $rps | $avg | $p50 | $p99 | $bad |"$'\n'
  done
done

native_mean=$(mean "${native_rps[@]}")
node_mean=$(mean "${node_rps[@]}")
ratio=$(awk -v a="$node_mean" -v b="$native_mean" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')

cat <<EOF2
## Terrafirma vs native hyper: hello world

$(machine_lines)
- command: \`wrk -t$threads -c$connections --latency -d${duration}s URL\`, ${rounds} interleaved rounds after ${warmup}s warm-up each; server and wrk share the machine, loopback
- node: \`terrafirma serve\` with \`pool.prewarm = $prewarm\`, guest \`examples/hello.wat\`, \`$node_url\`
- native: \`loadtest/native-hello\` (hyper 1, tokio multi-thread, mimalloc), \`$native_url\`

| round | server | requests/s | latency avg | p50 | p99 | errors + non-2xx |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
${rows%$'\n'}

| | native | node | node / native |
| --- | ---: | ---: | ---: |
| mean requests/s | $native_mean | $node_mean | $ratio |
EOF2
