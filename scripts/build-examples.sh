#!/usr/bin/env bash
# Builds the example guests in Rust (examples/rust, with sdk/rust) and C
# (examples/c, with sdk/c/terrafirma.h) into one directory, as
# rust-NAME.wasm and c-NAME.wasm. The WAT examples need no build: the node
# takes .wat uploads as they are.
#
#   bash scripts/build-examples.sh              # into target/examples/
#   bash scripts/build-examples.sh OUT_DIR
#   bash scripts/build-examples.sh --rust-only  # skip the C examples
#
# Needs: cargo with the wasm32-unknown-unknown, wasm32-wasip1 and wasm32-wasip2
# targets (examples/rust-wasi is built for wasip1 and wasip2, the wasi:http
# component examples/wasi-http for wasip2); for C, clang, wasm-ld
# and wasi-libc (Debian: clang lld wasi-libc libclang-rt-NN-dev-wasm32).
# Environment: CC (default clang), WASI_SYSROOT (default /usr),
# RUST_TARGET (default wasm32-unknown-unknown; wasm32-wasip1 works too).
set -euo pipefail

rust_only=false
out=""
for arg in "$@"; do
  case "$arg" in
    --rust-only) rust_only=true ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-examples: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "build-examples: one output directory only" >&2; exit 2; }; out=$arg ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
out=${out:-$root/target/examples}
rust_target=${RUST_TARGET:-wasm32-unknown-unknown}
cc=${CC:-clang}
sysroot=${WASI_SYSROOT:-/usr}

say() { printf 'build-examples: %s\n' "$*"; }
die() { printf 'build-examples: error: %s\n' "$*" >&2; exit 1; }

# Every toolchain is checked before anything is built.
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (bash scripts/setup.sh)"
for target in "$rust_target" wasm32-wasip1 wasm32-wasip2; do
  [ -d "$(rustc --print sysroot)/lib/rustlib/$target" ] \
    || die "Rust target $target is not installed: rustup target add $target"
done
if ! $rust_only; then
  command -v "$cc" >/dev/null 2>&1 \
    || die "$cc not found: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32 (or --rust-only)"
  # clang 14 knows the wasi-libc triple as wasm32-wasi; newer packages may
  # install it as wasm32-wasip1.
  c_target=""
  for candidate in wasm32-wasip1 wasm32-wasi; do
    if [ -f "$sysroot/lib/$candidate/libc.a" ]; then
      c_target=$candidate
      break
    fi
  done
  [ -n "$c_target" ] || die "wasi-libc not found under $sysroot: apt-get install wasi-libc, or set WASI_SYSROOT"
  builtins=$("$cc" --target="$c_target" --sysroot="$sysroot" -print-libgcc-file-name 2>/dev/null || true)
  [ -f "$builtins" ] \
    || die "compiler-rt builtins for wasm32 not found ($builtins): apt-get install libclang-rt-NN-dev-wasm32 for clang NN"
  command -v wasm-ld >/dev/null 2>&1 || command -v "wasm-ld-$("$cc" -dumpversion | cut -d. -f1)" >/dev/null 2>&1 \
    || die "wasm-ld not found: apt-get install lld"
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)

say "Rust examples ($rust_target)"
cargo build --release --locked --target "$rust_target" --manifest-path "$root/examples/rust/Cargo.toml"
# all-imports imports every hostcall of the SDK (tests/all/abi_table.rs);
# cargo names its output all_imports.wasm.
for name in hello echo counter fetch all-imports grep; do
  cp "$root/examples/rust/target/$rust_target/release/${name//-/_}.wasm" "$out/rust-$name.wasm"
done
# The 2019-style guest without the SDK.
cargo build --release --locked --target "$rust_target" --manifest-path "$root/examples/rust-kv/Cargo.toml"
cp "$root/examples/rust-kv/target/$rust_target/release/rust_kv.wasm" "$out/rust-kv.wasm"
# A WASI command: a CGI handler on the node, a program for `terrafirma run`.
cargo build --release --locked --target wasm32-wasip1 --manifest-path "$root/examples/rust-wasi/Cargo.toml"
cp "$root/examples/rust-wasi/target/wasm32-wasip1/release/rust-wasi.wasm" "$out/rust-wasi.wasm"
# The same as a wasip2 command component (exports wasi:cli/run).
cargo build --release --locked --target wasm32-wasip2 --manifest-path "$root/examples/rust-wasi/Cargo.toml"
cp "$root/examples/rust-wasi/target/wasm32-wasip2/release/rust-wasi.wasm" "$out/rust-wasi-p2.wasm"
# A wasi:http/proxy component.
cargo build --release --locked --target wasm32-wasip2 --manifest-path "$root/examples/wasi-http/Cargo.toml"
cp "$root/examples/wasi-http/target/wasm32-wasip2/release/wasi_http.wasm" "$out/wasi-http.wasm"

if ! $rust_only; then
  say "C examples ($cc, $c_target, wasi-libc in $sysroot)"
  cflags=(--target="$c_target" --sysroot="$sysroot" -mexec-model=reactor -O2 -Wall -Wextra -Werror)
  # all-imports imports every hostcall of the header (tests/all/abi_table.rs).
  for name in hello echo counter fetch all-imports primes; do
    "$cc" "${cflags[@]}" -I "$root/sdk/c" -o "$out/c-$name.wasm" "$root/examples/c/${name//-/_}.c"
  done
  # Declares its hostcalls as plain externs, as 2019 guests did: they link as
  # imports from `env` with --allow-undefined.
  "$cc" "${cflags[@]}" -Wl,--allow-undefined -o "$out/c-echo-agent.wasm" "$root/examples/c/echo_agent.c"
  # A WASI command (`_start`), for `terrafirma run` and as a CGI handler.
  "$cc" --target="$c_target" --sysroot="$sysroot" -O2 -Wall -Wextra -Werror -o "$out/c-hello-wasi.wasm" "$root/examples/c/hello_wasi.c"
fi

say "done: $out"
ls -1 "$out"
