#!/usr/bin/env bash
# Post-copy fault block size (docs/MIGRATION.md, "Block size"): migrates a
# dirtier guest with --strategy postcopy over an emulated 1 Gbit/s link once
# per block size and repetition, and prints one line per run: block, faults,
# fault p50/p99 (ms), post-copy time (ms), guest-visible downtime (ms), and
# the destination's time the vCPUs waited for pages in all.
# Usage: [GUEST_ARGS=...] scripts/postcopy-block.sh [REPS] [BLOCK...]
# (ferry built in target/debug; default guest: 64 MiB written at random)
set -euo pipefail
FERRY=${FERRY:-target/debug/ferry}
REPS=${1:-3}
shift || true
BLOCKS=${*:-4K 16K 64K 256K 1M}
GUEST_ARGS=${GUEST_ARGS:-"ws=64M rate=20000 pattern=random verify=500ms"}
DIR=$(mktemp -d /tmp/ferry-block.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/secret"
port=$((20000 + RANDOM % 20000))
echo "block faults p50_ms p99_ms postcopy_ms guest_downtime_ms waited_in_all"
for rep in $(seq "$REPS"); do
  for b in $BLOCKS; do
    run="$DIR/$b-$rep"; mkdir -p "$run"; port=$((port + 1))
    "$FERRY" run --guest dirtier --append "$GUEST_ARGS" --memory 512M \
      --api "$run/src.sock" --serial "$run/src.log" --timestamps 2>"$run/src.err" &
    src=$!
    "$FERRY" receive --listen "127.0.0.1:$port" --secret-file "$DIR/secret" \
      --postcopy-block "$b" --api "$run/dst.sock" --serial "$run/dst.log" --timestamps 2>"$run/dst.err" &
    dst=$!
    # Let the guest fill its working set.
    for _ in $(seq 100); do
      "$FERRY" ctl --api "$run/src.sock" status 2>/dev/null | jq -e '.guest.verify_passes >= 1' >/dev/null 2>&1 && break
      sleep 0.2
    done
    sleep 2
    "$FERRY" migrate --api "$run/src.sock" --to "127.0.0.1:$port" --secret-file "$DIR/secret" \
      --strategy postcopy --link-bandwidth 1Gbit --json \
      --guest-logs "$run/src.log" "$run/dst.log" >"$run/report.json" 2>"$run/migrate.err" || true
    jq -r --arg b "$b" '[$b, .postcopy.faults, .postcopy.fault_p50_ms, .postcopy.fault_p99_ms,
       .postcopy.duration_ms, .guest_downtime_ms] | map(tostring) | join(" ")' "$run/report.json" | tr -d '\n'
    echo " $(sed -n 's/.*, \([^ ]*\) in all$/\1/p' "$run/dst.err")"
    wait "$src" 2>/dev/null || true
    "$FERRY" ctl --api "$run/dst.sock" shutdown >/dev/null 2>&1 || kill "$dst" 2>/dev/null || true
    wait "$dst" 2>/dev/null || true
  done
done
