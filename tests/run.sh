#!/usr/bin/env bash
# The whole test suite, from a fresh clone of this repository on a fresh
# machine (a Rust toolchain and python3 present). Installs what the tests
# need, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A real browser for the dashboard test (tests/api_dashboard.rs): Debian's
# chromium and its chromedriver, installed once.
if ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=env
  elif command -v sudo >/dev/null 2>&1; then
    as_root=sudo
  else
    echo "tests/run.sh: chromium and chromedriver are missing and installing them needs root (no sudo here): apt-get install chromium chromium-driver" >&2
    exit 1
  fi
  $as_root apt-get update
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi

# Real clients for the integration tests: the OpenTelemetry Python SDK, the
# official GenAI instrumentation and the openai client, in a local venv.
if [ ! -x .venv/bin/python ] || ! cmp -s tests/python/requirements.txt .venv/.requirements; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt .venv/.requirements
fi
export AGENT_IMMUNE_TEST_PYTHON="$PWD/.venv/bin/python"

# The fuzz targets (fuzz/) need the nightly toolchain and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
# Every fuzz target for a bounded time on the committed corpus.
fuzz/run.sh
