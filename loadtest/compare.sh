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

cd "$(dirname "$0")/.."
root=$PWD

duration=${DURATION:-10}
rounds=${ROUNDS:-2}
warmup=${WARMUP:-2}
threads=${THREADS:-1}
connections=${CONNECTIONS:-32}
prewarm=${PREWARM:-0}
node_port=${NODE_PORT:-18080}
admin_port=${NODE_ADMIN_PORT:-18081}
native_port=${NATIVE_PORT:-18090}

for v in duration rounds warmup threads connections prewarm node_port admin_port native_port; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "compare: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
if [ "$duration" -lt 1 ] || [ "$rounds" -lt 1 ]; then
  echo "compare: DURATION and ROUNDS must be at least 1" >&2; exit 2
fi

node_bin=$root/target/release/terrafirma
native_bin=$root/loadtest/native-hello/target/release/native-hello
node_url=http://127.0.0.1:$node_port/hello
native_url=http://127.0.0.1:$native_port/hello
admin_url=http://127.0.0.1:$admin_port

log() { printf 'compare: %s\n' "$*" >&2; }
die() { printf 'compare: error: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d -t terrafirma-compare.XXXXXX)
pids=()
wrk_pid=""
cleanup() {
  local pid
  [ -z "$wrk_pid" ] || kill "$wrk_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "installing what is missing (scripts/setup.sh --bench)"
bash scripts/setup.sh --bench >&2

# One build at a time: the machine may be small.
log "building the node (cargo build --release)"
cargo build --release >&2
log "building the native baseline (loadtest/native-hello)"
(cd loadtest/native-hello && cargo build --release) >&2

for port in "$node_port" "$admin_port" "$native_port"; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
    die "something already answers on 127.0.0.1:$port; stop it or pick other ports"
  fi
done

# wait_for URL PID NAME LOG: until URL answers 2xx, at most 30 s.
wait_for() {
  local url=$1 pid=$2 name=$3 logfile=$4
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null --max-time 1 "$url" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "$name exited before it was ready"; }
    sleep 0.1
  done
  cat "$logfile" >&2
  die "$name did not answer $url within 30 s"
}

printf '[pool]\nprewarm = %s\n' "$prewarm" >"$work/config.toml"
mkdir -p "$work/data"
log "starting the node on 127.0.0.1:$node_port (admin :$admin_port, pool.prewarm = $prewarm)"
RUST_LOG=${RUST_LOG:-warn} "$node_bin" serve \
  --listen "127.0.0.1:$node_port" --admin "127.0.0.1:$admin_port" \
  --data "$work/data" --config "$work/config.toml" >"$work/node.log" 2>&1 &
node_pid=$!
pids+=("$node_pid")
log "starting native-hello on 127.0.0.1:$native_port"
"$native_bin" "$native_port" >"$work/native.log" 2>&1 &
native_pid=$!
pids+=("$native_pid")

wait_for "$admin_url/healthz" "$node_pid" "the node" "$work/node.log"
wait_for "http://127.0.0.1:$native_port/" "$native_pid" "native-hello" "$work/native.log"

log "deploying examples/hello.wat"
"$node_bin" deploy examples/hello.wat --name hello --node "$admin_url" >&2
for url in "$native_url" "$node_url"; do
  body=$(curl -s --max-time 5 "$url") || die "no answer from $url"
  [ "$body" = "Hello World!" ] || die "$url answered '$body', expected 'Hello World!'"
done

wrk_cmd=(wrk "-t$threads" "-c$connections" --latency)
# wrk gets its duration plus a margin, then is stopped: the run stays bounded.
# It runs in the background so that a signal to this script is handled at
# once (bash defers traps until a foreground child ends).
run_wrk() { # run_wrk SECONDS URL OUTFILE
  timeout --kill-after=5 "$(($1 + 30))" "${wrk_cmd[@]}" "-d$1s" "$2" >"$3" &
  wrk_pid=$!
  wait "$wrk_pid"
}

log "warming up, ${warmup}s each"
if [ "$warmup" -gt 0 ]; then
  run_wrk "$warmup" "$native_url" "$work/warmup-native.txt"
  run_wrk "$warmup" "$node_url" "$work/warmup-node.txt"
fi

# parse FILE: "rps avg p50 p99 errors" from wrk's output.
parse() {
  awk '
    /Requests\/sec:/            { rps = $2 }
    /^ *Latency +[0-9]/         { avg = $2 }
    /^ *50% /                   { p50 = $2 }
    /^ *99% /                   { p99 = $2 }
    /Non-2xx or 3xx responses:/ { bad += $NF }
    /Socket errors:/            { gsub(",", ""); bad += $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %s %d\n", rps ? rps : "0", avg ? avg : "-", p50 ? p50 : "-", p99 ? p99 : "-", bad }
  ' "$1"
}

rows=""
native_rps=()
node_rps=()
for round in $(seq 1 "$rounds"); do
  for server in native node; do
    if [ "$server" = native ]; then url=$native_url; else url=$node_url; fi
    out=$work/round$round-$server.txt
    log "round $round/$rounds: $server, ${duration}s"
    run_wrk "$duration" "$url" "$out" || { cat "$out" >&2; die "wrk failed against $url"; }
    read -r rps avg p50 p99 bad < <(parse "$out")
    if [ "$server" = native ]; then native_rps+=("$rps"); else node_rps+=("$rps"); fi
    [ "$bad" -eq 0 ] || log "warning: $server had $bad errors or non-2xx answers in round $round; its rate is not comparable"
    rows+="| $round | $server | $rps | $avg | $p50 | $p99 | $bad |"$'\n'
  done
done

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s / NR }'; }
native_mean=$(mean "${native_rps[@]}")
node_mean=$(mean "${node_rps[@]}")
ratio=$(awk -v a="$node_mean" -v b="$native_mean" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "no commit")
[ -z "$(git status --porcelain -- src 2>/dev/null)" ] || commit="$commit (src/ modified)"

cat <<EOF
## Terrafirma vs native hyper: hello world

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) cores, ${cpu:-unknown CPU}, Linux $(uname -r)
- commit: $commit
- command: \`${wrk_cmd[*]} -d${duration}s URL\`, ${rounds} interleaved rounds after ${warmup}s warm-up each; server and wrk share the machine, loopback
- node: \`terrafirma serve\` with \`pool.prewarm = $prewarm\`, guest \`examples/hello.wat\`, \`$node_url\`
- native: \`loadtest/native-hello\` (hyper 1, tokio multi-thread, mimalloc), \`$native_url\`

| round | server | requests/s | latency avg | p50 | p99 | errors + non-2xx |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
${rows%$'\n'}

| | native | node | node / native |
| --- | ---: | ---: | ---: |
| mean requests/s | $native_mean | $node_mean | $ratio |
EOF
