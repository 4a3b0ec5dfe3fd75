#!/usr/bin/env bash
# From a fresh clone to a running node serving examples/hello.wat:
# installs what is missing, builds, starts `terrafirma serve` on a temporary
# data directory, deploys the example, calls it, then keeps the node running
# until Ctrl-C.
#
#   bash scripts/demo.sh          # leave the node running in the foreground
#   bash scripts/demo.sh --exit   # stop the node after the first response
#
# Environment: TF_LISTEN (default 127.0.0.1:8080), TF_ADMIN (127.0.0.1:8081).
set -euo pipefail

exit_after=false
for arg in "$@"; do
  case "$arg" in
    --exit) exit_after=true ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
listen=${TF_LISTEN:-127.0.0.1:8080}
admin=${TF_ADMIN:-127.0.0.1:8081}
bin=target/release/terrafirma

say() { printf '\ndemo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

say "installing what is missing (scripts/setup.sh)"
bash scripts/setup.sh

say "building (cargo build --release; the first build takes a few minutes)"
cargo build --release

for addr in "$listen" "$admin"; do
  if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
    die "something already answers on $addr; stop it or set TF_LISTEN / TF_ADMIN"
  fi
done

data=$(mktemp -d -t terrafirma-demo.XXXXXX)
log="$data.log"
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill "$node_pid" 2>/dev/null || true
    # Give a graceful shutdown 5 s, then stop it hard.
    for _ in $(seq 1 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$data" "$log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting: $bin serve --listen $listen --admin $admin --data $data"
"$bin" serve --listen "$listen" --admin "$admin" --data "$data" >"$log" 2>&1 &
node_pid=$!

# Wait for the admin API, at most 30 s; give up early if the node died.
for _ in $(seq 1 300); do
  if curl -sf -o /dev/null --max-time 1 "http://$admin/healthz"; then break; fi
  if ! kill -0 "$node_pid" 2>/dev/null; then
    cat "$log" >&2
    die "the node exited before it was ready (its log is above)"
  fi
  sleep 0.1
done
curl -sf -o /dev/null --max-time 1 "http://$admin/healthz" \
  || { cat "$log" >&2; die "the node did not answer http://$admin/healthz within 30 s"; }

say "deploying: $bin deploy examples/hello.wat --name hello --node http://$admin"
"$bin" deploy examples/hello.wat --name hello --node "http://$admin"

say "calling: curl -i http://$listen/hello"
response=$(curl -si --max-time 10 "http://$listen/hello") || die "no answer from http://$listen/hello"
printf '%s\n' "$response"
body=$(curl -s --max-time 10 "http://$listen/hello")
[ "$body" = "Hello World!" ] || die "expected the body 'Hello World!', got '$body'"
say "ok: examples/hello.wat answered 'Hello World!'"

if $exit_after; then
  say "stopping the node (--exit)"
  exit 0
fi

cat <<EOF

The node is running:
  site:   curl http://$listen/hello
  admin:  curl http://$admin/v1/sites/_default/modules
          curl http://$admin/metrics
  more:   $bin deploy examples/echo.wat --node http://$admin    (see examples/README.md)
  data:   $data (removed on exit)
Its log follows. Ctrl-C stops it.

EOF
# The node's log until it exits; Ctrl-C ends tail and the trap stops the node.
tail -n +1 -f --pid="$node_pid" "$log" &
tail_pid=$!
wait "$node_pid" || true
kill "$tail_pid" 2>/dev/null || true
