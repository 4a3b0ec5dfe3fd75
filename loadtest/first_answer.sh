#!/usr/bin/env bash
# Upload → first answer: how long after a new module's upload starts its
# first request is answered. Each round uploads the guest with a fresh
# custom section (so its sha256 is new and nothing is cached), then asks
# for it until it answers 200 with BODY_PREFIX. One node, loopback.
#
#   bash loadtest/first_answer.sh [GUEST.wasm SUFFIX BODY_PREFIX]
#
# Each round's module is served at /mN; SUFFIX follows it in the request
# (a POST with the body "a\nb\nc\n"). Default guest:
# target/examples/rust-grep.wasm (1.1 MB, Rust with regex and serde_json;
# bash scripts/build-examples.sh), SUFFIX ?re=b, BODY_PREFIX
# {"matches":[{"line":2. Environment: ROUNDS (default 5),
# PORT/ADMIN_PORT (28080/28081), NODE_BIN, BASELINE (true: the default,
# new modules first served with Winch code; false: the node started with
# `baseline_compiler = false`). Prints each round's upload time,
# first-answer time, what compiled the code and, with the baseline
# compiler, when the Cranelift code took over; then the median and the
# worst first answer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
guest=${1:-$root/target/examples/rust-grep.wasm}
suffix=${2:-?re=b}
prefix=${3:-'{"matches":[{"line":2'}
bin=${NODE_BIN:-$root/target/release/terrafirma}
rounds=${ROUNDS:-5} port=${PORT:-28080} admin=${ADMIN_PORT:-28081}
[ -f "$guest" ] || { echo "first_answer: $guest not found (bash scripts/build-examples.sh)" >&2; exit 1; }
data=$(mktemp -d)
echo "baseline_compiler = ${BASELINE:-true}" >"$data.toml"
"$bin" serve --config "$data.toml" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --data "$data" >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$data.log" "$data.toml"' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$admin/healthz" && break; sleep 0.1; done
python3 - "$guest" "$port" "$admin" "$suffix" "$prefix" "$rounds" <<'PY'
import http.client, statistics, sys, time
guest, port, admin, suffix, prefix, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
wasm = open(guest, "rb").read()
def custom_section(payload):
    name = b"terrafirma-nonce"
    body = bytes([len(name)]) + name + payload
    size, out = len(body), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        out += bytes([byte | (0x80 if size else 0)])
        if not size:
            return b"\x00" + out + body
firsts = []
for round in range(1, rounds + 1):
    module = wasm + custom_section(f"{time.time_ns()}-{round}".encode())
    name = f"m{round}"
    started = time.monotonic()
    admin_conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
    admin_conn.request("PUT", f"/v1/sites/_default/modules/{name}", body=module)
    answer = admin_conn.getresponse().read().decode()
    uploaded = time.monotonic() - started
    assert '"abi"' in answer, answer
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", f"/{name}{suffix}", body=b"a\nb\nc\n")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status == 200 and body.startswith(prefix):
            break
        assert resp.status in (404,), (resp.status, body)
    first = time.monotonic() - started
    firsts.append(first)
    compiler = answer.split('"compiler":"')[1].split('"')[0]
    optimised = ""
    if compiler == "winch":
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
            conn.request("GET", f"/v1/sites/_default/modules/{name}")
            if '"compiler":"cranelift"' in conn.getresponse().read().decode():
                break
            time.sleep(0.005)
        optimised = f", Cranelift code serving from {(time.monotonic() - started) * 1000:.0f} ms"
    print(f"round {round}: upload answered in {uploaded * 1000:.0f} ms, first answer at {first * 1000:.0f} ms ({compiler}){optimised}")
print(f"upload -> first answer: median {statistics.median(firsts) * 1000:.0f} ms, worst {max(firsts) * 1000:.0f} ms over {rounds}")
PY
