#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a bounded time each:
#   frame_decoder  the migration stream decoder (frames, messages, records)
#   receiver       the destination's state machine, with the in-memory fake VM
#   gate           the pre-authentication path as a server: a wire::gate::Gate
#                  on loopback against several concurrent fuzzer-driven peers
#   scripts/fuzz.sh [SECONDS [TARGET...]]    (default 60 s, every target)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain is put in
# nightly mode with RUSTC_BOOTSTRAP=1, as cargo-fuzz needs -Z flags.
# Exits non-zero if the fuzzer finds a crash; the input is left in fuzz/artifacts/.
# Seeds in fuzz/seeds/TARGET/ (written by `cargo test -p wire --test fuzz_seeds`)
# are read as a second corpus; new inputs go to fuzz/corpus/TARGET/ only.
set -euo pipefail
SECS="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/fuzz"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run 'cargo install cargo-fuzz'" >&2
    exit 2
fi
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(frame_decoder receiver gate)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/fuzz/target}"
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t"
    SEEDS=()
    [ -d "seeds/$t" ] && SEEDS=("seeds/$t")
    echo "== fuzzing $t for ${SECS}s"
    cargo fuzz run "$t" "corpus/$t" "${SEEDS[@]}" -- \
        -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
done
