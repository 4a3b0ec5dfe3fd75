#!/usr/bin/env bash
# Installs what building, testing and demoing Terrafirma needs on a fresh
# Debian machine. Idempotent: everything already present is skipped.
#
#   bash scripts/setup.sh           # toolchain checks, wasm targets, C compilers, curl
#   bash scripts/setup.sh --bench   # also wrk, hyperfine, podman, runc, busybox, node, valgrind,
#                                   # and (cargo install) oha, wasmtime-cli, wasmer-cli, for
#                                   # loadtest/ and the startup bench: about 1.5 h the first time
set -euo pipefail

bench=false
for arg in "$@"; do
  case "$arg" in
    --bench) bench=true ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# apt-get as root, or through sudo; `apt-get update` at most once per run.
apt_updated=false
apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  if ! $apt_updated; then
    say "apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=true
  fi
  say "apt-get install $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# 1. Rust toolchain (cargo from rustup; rust-version in Cargo.toml says which).
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 \
  || die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
say "ok: $(cargo --version)"

# 2. rustfmt and clippy (CI checks formatting and lints), and the targets for
#    building guests in Rust (the tests build the examples with them).
if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    if rustup component list --installed | grep -q "^$component"; then
      say "ok: rustup component $component"
    else
      say "rustup component add $component"
      rustup component add "$component"
    fi
  done
  installed=$(rustup target list --installed)
  for target in wasm32-unknown-unknown wasm32-wasip1 wasm32-wasip2; do
    if grep -qx "$target" <<<"$installed"; then
      say "ok: rust target $target"
    else
      say "rustup target add $target"
      rustup target add "$target" \
        || say "warning: could not add target $target; only needed to build Rust guests"
    fi
  done
else
  say "warning: rustup not found; skipping wasm32 targets (only needed to build Rust guests)"
fi

# 3. Debian packages: a C compiler (mimalloc and other -sys crates build C),
#    curl (scripts/demo.sh and loadtest/compare.sh talk HTTP with it) and
#    nats-server (the fleet tests start JetStream servers of their own).
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
if $bench; then
  # wrk and hyperfine for loadtest/; podman, runc, busybox and node for the
  # rows of `cargo bench --bench startup`; bc and perf-free CPU sampling
  # for loadtest/pinned.sh.
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  [ -x /bin/busybox ] || need+=(busybox-static)
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v bc >/dev/null 2>&1 || need+=(bc)
  command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
say "ok: cc, curl, nats-server$($bench && echo ', wrk, hyperfine, podman, runc, busybox, node, bc, valgrind')"

# 4. C guests (the tests build examples/c with sdk/c/terrafirma.h): clang,
#    wasm-ld, wasi-libc, and compiler-rt's wasm32 builtins for this clang.
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v wasm-ld >/dev/null 2>&1 || need+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || [ -f /usr/lib/wasm32-wasip1/libc.a ] || need+=(wasi-libc)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi
clang_major=$(clang -dumpversion | cut -d. -f1)
wasm_target=wasm32-wasi
[ -f /usr/lib/wasm32-wasip1/libc.a ] && wasm_target=wasm32-wasip1
if [ ! -f "$(clang --target=$wasm_target --sysroot=/usr -print-libgcc-file-name)" ]; then
  apt_install "libclang-rt-$clang_major-dev-wasm32"
fi
say "ok: clang $clang_major, wasm-ld, wasi-libc ($wasm_target)"

# 5. The Prometheus project's own text-format parser (its Python client),
#    which the tests use to read GET /metrics as a Prometheus server would.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    apt_install python3-prometheus-client
  else
    say "python3 -m pip install prometheus-client"
    python3 -m pip install --quiet prometheus-client
  fi
fi
say "ok: prometheus_client for python3"

# 6. With --bench: matplotlib for scripts/plot.py, for the python3 on PATH
#    (Debian's package where that is the system's, else from PyPI).
if $bench && ! python3 -c 'import matplotlib' 2>/dev/null; then
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    apt_install python3-matplotlib
  else
    say "python3 -m pip install matplotlib"
    python3 -m pip install --quiet matplotlib
  fi
fi
$bench && say "ok: matplotlib"

# 7. With --bench: the peers the harness compares against, from crates.io
#    (none is packaged by Debian): oha for fixed-rate load, wasmtime-cli for
#    `wasmtime run` / `wasmtime serve`, wasmer-cli for `wasmer run`. Each is
#    built from source: oha a few minutes, wasmtime about 25 min, wasmer
#    about an hour on two cores. A failed build is said and skipped: the
#    rows that need it print as skipped with the reason.
cargo_install() {
  local bin=$1; shift
  if command -v "$bin" >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/$bin" ]; then
    say "ok: $bin"
  else
    say "cargo install $* (slow: built from source)"
    cargo install --locked "$@" || say "warning: cargo install $1 failed; the rows that need $bin are skipped"
  fi
}
if $bench; then
  cargo_install oha oha --version 1.16.0
  cargo_install wasmtime wasmtime-cli --version 48.0.8
  cargo_install wasmer wasmer-cli --version 7.4.2 --features cranelift
fi
say "done"
