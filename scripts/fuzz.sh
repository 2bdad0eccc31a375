#!/usr/bin/env bash
# Runs the cargo-fuzz target for the migration stream decoder for a bounded time.
#   scripts/fuzz.sh [SECONDS]        (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain is put in
# nightly mode with RUSTC_BOOTSTRAP=1, as cargo-fuzz needs -Z flags.
# Exits non-zero if the fuzzer finds a crash; the input is left in fuzz/artifacts/.
set -euo pipefail
SECS="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/fuzz"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run 'cargo install cargo-fuzz'" >&2
    exit 2
fi
mkdir -p corpus/frame_decoder
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/fuzz/target}"
exec cargo fuzz run frame_decoder corpus/frame_decoder -- \
    -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
