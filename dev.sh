#!/usr/bin/env bash
# memd developer entry point. On a fresh Debian/Ubuntu machine with Rust installed:
#   ./dev.sh serve [memd flags...]   build and start memd on its embedded default configuration
#   ./dev.sh test                    build everything and run the whole test suite
# Both install what they need (libclang for RocksDB's bindings) or say exactly what to run.
set -euo pipefail
cd "$(dirname "$0")"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/memd/target}"

die() { echo "dev.sh: $*" >&2; exit 1; }

need_rust() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found. Install Rust first: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
}

# RocksDB's Rust bindings are generated with bindgen, which needs libclang and clang's headers.
have_libclang() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q "install ok installed"
  else
    ls /usr/lib*/libclang*.so* /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1
  fi
}

need_libclang() {
  have_libclang && return 0
  local packages="libclang-dev"
  command -v c++ >/dev/null 2>&1 || packages="$packages g++"
  if ! command -v apt-get >/dev/null 2>&1; then
    die "libclang is missing. Install your distribution's libclang development package (e.g. clang-devel), then re-run."
  fi
  echo "dev.sh: installing $packages (needed to build RocksDB)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages
  else
    die "libclang is missing and I cannot install it without root. Run: sudo apt-get install -y $packages"
  fi
}

setup() {
  need_rust
  need_libclang
  mkdir -p "$CARGO_TARGET_DIR"
}

cmd_serve() {
  setup
  echo "dev.sh: building memd and memctl (release; the first build compiles RocksDB, ~10 min on 2 cores)" >&2
  cargo build --release --locked -p memd-server -p memd-cli --bins
  echo "dev.sh: memctl is at $CARGO_TARGET_DIR/release/memctl" >&2
  exec "$CARGO_TARGET_DIR/release/memd" "$@"
}

cmd_test() {
  setup
  if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check || die "code is not formatted: run cargo fmt --all"
  else
    echo "dev.sh: rustfmt not installed, skipping the format check (rustup component add rustfmt)" >&2
  fi
  if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --locked --workspace --all-targets -- -D warnings
  else
    echo "dev.sh: clippy not installed, skipping lints (rustup component add clippy)" >&2
  fi
  # The durability test runs the real memd binary as a child process.
  cargo build --locked --workspace --bins
  cargo test --locked --workspace
}

case "${1:-}" in
  serve) shift; cmd_serve "$@" ;;
  test) shift; cmd_test "$@" ;;
  *) echo "usage: ./dev.sh serve [memd flags...] | ./dev.sh test" >&2; exit 2 ;;
esac
