#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md in one command: builds the release binary,
# fetches Rotel (the `rotel` wheel from PyPI ships its rotel-agent binary)
# once into target/bench-cache, and runs `agent-immune bench` against both.
# Extra arguments go to `agent-immune bench` (see its --help), e.g.
#   scripts/bench.sh --only throughput --duration 30s
set -euo pipefail
cd "$(dirname "$0")/.."

ROTEL_VERSION=0.0.1a15
CACHE=target/bench-cache
ROTEL="$CACHE/rotel/rotel-agent"
if [ ! -x "$ROTEL" ]; then
  mkdir -p "$CACHE/wheels"
  python3 -m pip download --no-deps "rotel==$ROTEL_VERSION" -d "$CACHE/wheels"
  python3 -m zipfile -e "$CACHE"/wheels/rotel-"$ROTEL_VERSION"-*.whl "$CACHE"
  # Zip extraction drops the executable bit.
  chmod +x "$ROTEL"
fi
echo "rotel: $("$ROTEL" --version)"

cargo build --release
exec target/release/agent-immune bench --rotel "$ROTEL" "$@"
