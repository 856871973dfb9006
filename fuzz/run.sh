#!/usr/bin/env bash
# Bounded fuzzing of every decoder (fuzz/fuzz_targets/) on the committed
# corpus: builds the targets, runs each for FUZZ_SECONDS (default 15), and
# fails on any crash, panic, failed assertion, timeout or memory blow-up
# (the input is left in fuzz/artifacts/<target>/). Needs the nightly
# toolchain and cargo-fuzz (tests/run.sh installs both).
#
#   fuzz/run.sh                  every target, 15 s each
#   FUZZ_SECONDS=300 fuzz/run.sh otlp_protobuf    one target, longer
#   FUZZ_SEED=0 fuzz/run.sh      a random seed (libFuzzer's own choice)
#
# The test command runs with a fixed seed (FUZZ_SEED, default 1) so that a
# run of the same code explores the same inputs: a finding is then a
# reproducible failure of that commit, not luck of the draw. Random-seed
# runs are for hunting (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-15}"
seed="${FUZZ_SEED:-1}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz --locked" >&2
  exit 1
fi
cargo fmt --check --manifest-path Cargo.toml

# The code under test is safe Rust: no sanitizer (a faster build and run);
# debug assertions and overflow checks stay on (cargo fuzz's default).
build=(-s none --codegen-units 16)
cargo +nightly fuzz build "${build[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  # Every target (not `cargo fuzz list`: seed_corpus is a bin, not a target).
  for file in fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  echo "fuzz/run.sh: $target for ${seconds}s"
  # New inputs go to a scratch directory: the committed corpus changes
  # only by hand (cargo fuzz cmin, see fuzz/README.md).
  mkdir -p "$scratch/$target"
  cargo +nightly fuzz run "${build[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
