# Shared by the load-test scripts (sourced, not run): argument checks,
# builds, starting and stopping the node and the native server, bounded wrk
# runs and parsing their output. Expects `name` (the script's name for
# messages) and `root` (the repository root) to be set.

log() { printf '%s: %s\n' "$name" "$*" >&2; }
die() { printf '%s: error: %s\n' "$name" "$*" >&2; exit 1; }

# require_numbers VAR...: each variable holds a whole number.
require_numbers() {
  local v
  for v in "$@"; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
  done
}

# Ports every script uses: NODE_PORT, NODE_ADMIN_PORT, NATIVE_PORT.
node_port=${NODE_PORT:-18080}
admin_port=${NODE_ADMIN_PORT:-18081}
native_port=${NATIVE_PORT:-18090}

# NODE_BIN: measure another build of the node (e.g. an earlier commit's).
node_bin=${NODE_BIN:-$root/target/release/terrafirma}
native_bin=$root/loadtest/native-hello/target/release/native-hello

work=$(mktemp -d -t "terrafirma-$name.XXXXXX")
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

# build_all: wrk if missing, the node and native-hello in release mode, one
# build at a time (the machine may be small).
build_all() {
  log "installing what is missing (scripts/setup.sh --bench)"
  bash "$root/scripts/setup.sh" --bench >&2
  if [ -n "${NODE_BIN:-}" ]; then
    [ -x "$NODE_BIN" ] || die "NODE_BIN=$NODE_BIN is not an executable"
    log "measuring the node at $NODE_BIN (not built here)"
  else
    log "building the node (cargo build --release)"
    (cd "$root" && cargo build --release) >&2
  fi
  log "building the native baseline (loadtest/native-hello)"
  (cd "$root/loadtest/native-hello" && cargo build --release) >&2
}

# ports_free PORT...: nothing answers there yet.
ports_free() {
  local port
  for port in "$@"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
      die "something already answers on 127.0.0.1:$port; stop it or pick other ports"
    fi
  done
}

# wait_for URL PID NAME LOG: until URL answers 2xx, at most 30 s.
wait_for() {
  local url=$1 pid=$2 what=$3 logfile=$4
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null --max-time 1 "$url" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "$what exited before it was ready"; }
    sleep 0.1
  done
  cat "$logfile" >&2
  die "$what did not answer $url within 30 s"
}

# start_node PORT ADMIN_PORT CONFIG_FILE: a node on a fresh data directory.
start_node() {
  mkdir -p "$work/data"
  log "starting the node on 127.0.0.1:$1 (admin :$2)"
  RUST_LOG=${RUST_LOG:-warn} "$node_bin" serve \
    --listen "127.0.0.1:$1" --admin "127.0.0.1:$2" \
    --data "$work/data" --config "$3" >"$work/node.log" 2>&1 &
  pids+=("$!")
  wait_for "http://127.0.0.1:$2/healthz" "$!" "the node" "$work/node.log"
}

# start_native PORT
start_native() {
  log "starting native-hello on 127.0.0.1:$1"
  "$native_bin" "$1" >"$work/native.log" 2>&1 &
  pids+=("$!")
  wait_for "http://127.0.0.1:$1/" "$!" "native-hello" "$work/native.log"
}

# run_wrk SECONDS CONNECTIONS OUTFILE URL [wrk options...]: bounded by its
# duration plus a margin; in the background so that a signal to the script
# is handled at once (bash defers traps until a foreground child ends).
run_wrk() {
  local seconds=$1 connections=$2 out=$3
  shift 3
  timeout --kill-after=5 "$((seconds + 30))" wrk "-t${THREADS:-1}" "-c$connections" --latency "-d${seconds}s" "$@" >"$out" &
  wrk_pid=$!
  wait "$wrk_pid"
}

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

# micros LATENCY: wrk's "812.00us" / "1.20ms" / "2.00s" in microseconds.
micros() {
  awk -v t="$1" 'BEGIN {
    v = t + 0
    if (t ~ /us$/) print v; else if (t ~ /ms$/) print v * 1000; else if (t ~ /s$/) print v * 1000000; else print "nan"
  }'
}

# mean VALUE...
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s / NR }'; }

# median VALUE...
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# machine_lines: the date, machine and commit lines of a report.
machine_lines() {
  local cpu commit
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "no commit")
  [ -z "$(git -C "$root" status --porcelain -- src 2>/dev/null)" ] || commit="$commit (src/ modified)"
  [ -z "${NODE_BIN:-}" ] || commit="node binary $NODE_BIN ($("$NODE_BIN" --version 2>/dev/null || echo 'no version')), scripts at $commit"
  printf -- '- date: %s\n- machine: %s cores, %s, Linux %s\n- commit: %s\n' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" "${cpu:-unknown CPU}" "$(uname -r)" "$commit"
}
