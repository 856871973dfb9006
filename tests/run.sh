#!/usr/bin/env bash
# The whole test suite, from a fresh clone of this repository on a fresh
# machine (a Rust toolchain and python3 present). Installs what the tests
# need, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients for the integration tests: the OpenTelemetry Python SDK, the
# official GenAI instrumentation and the openai client, in a local venv.
if [ ! -x .venv/bin/python ] || ! cmp -s tests/python/requirements.txt .venv/.requirements; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt .venv/.requirements
fi
export AGENT_IMMUNE_TEST_PYTHON="$PWD/.venv/bin/python"

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
