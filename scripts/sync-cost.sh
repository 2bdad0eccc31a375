#!/usr/bin/env bash
# What post-copy transaction synchronization costs the guest (docs/SAFETY.md,
# "Transactions"): migrates a dirtier guest with --strategy postcopy over an
# emulated link once per --sync-interval and repetition, and prints one line
# per run: interval, transactions applied, bytes sent back (destination to
# source), post-copy time (ms), and the guest's own write rate (pages/s,
# mean of its heartbeats on the destination up to the end of post-copy).
# Usage: [GUEST_ARGS=...] [LINK=...] scripts/sync-cost.sh [REPS] [INTERVAL...]
# (ferry built in target/debug; default guest: 16 MiB written as fast as it can)
set -euo pipefail
FERRY=${FERRY:-target/debug/ferry}
REPS=${1:-3}
shift || true
INTERVALS=${*:-0s 100ms 20ms}
GUEST_ARGS=${GUEST_ARGS:-"ws=16M rate=0 verify=500ms"}
LINK=${LINK:-50Mbit}
DIR=$(mktemp -d /tmp/ferry-sync.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/secret"
port=$((20000 + RANDOM % 20000))
echo "interval transactions bytes_back postcopy_ms guest_rate_pages_per_s"
for rep in $(seq "$REPS"); do
  for i in $INTERVALS; do
    run="$DIR/$i-$rep"; mkdir -p "$run"; port=$((port + 1))
    "$FERRY" run --guest dirtier --append "$GUEST_ARGS" --memory 256M \
      --api "$run/src.sock" --serial "$run/src.log" --timestamps 2>"$run/src.err" &
    src=$!
    "$FERRY" receive --listen "127.0.0.1:$port" --secret-file "$DIR/secret" \
      --api "$run/dst.sock" --serial "$run/dst.log" --timestamps 2>"$run/dst.err" &
    dst=$!
    for _ in $(seq 100); do
      "$FERRY" ctl --api "$run/src.sock" status 2>/dev/null | jq -e '.guest.verify_passes >= 1' >/dev/null 2>&1 && break
      sleep 0.2
    done
    sleep 1
    "$FERRY" migrate --api "$run/src.sock" --to "127.0.0.1:$port" --secret-file "$DIR/secret" \
      --strategy postcopy --link-bandwidth "$LINK" --sync-interval "$i" --json \
      >"$run/report.json" 2>"$run/migrate.err" || true
    # Heartbeats printed on the destination up to the end of post-copy.
    # (mean over its heartbeats: most windows read 0 while it waits for pages)
    rate=$(grep -o 'HB seq=[0-9]* tsc=[0-9]* rate=[0-9]*' "$run/dst.log" | sed 's/.*rate=//' \
      | awk '{s+=$1} END {if (NR) printf "%d", s/NR; else print 0}')
    jq -r --arg i "$i" --arg r "$rate" '[$i, .postcopy.transactions, .bytes_received,
       .postcopy.duration_ms, $r] | map(tostring) | join(" ")' "$run/report.json"
    kill -9 "$src" "$dst" 2>/dev/null || true
    wait "$src" "$dst" 2>/dev/null || true
  done
done
