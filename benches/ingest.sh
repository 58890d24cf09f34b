#!/usr/bin/env bash
# Measures `segport ingest` throughput and peak RSS: generates PROFILES synthetic profiles (and
# their ~5 events each) with `segport generate`, then loads profiles and events into the
# embedded default catalog, timing each with /usr/bin/time.
#
#   benches/ingest.sh [PROFILES]       (default 1000000; needs ~2.3 GB per million profiles)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILES=${1:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/segport-target}
cargo build --release -q -p segport
BIN=$CARGO_TARGET_DIR/release/segport
WORK=${SEGPORT_BENCH_DIR:-$(mktemp -d)}
cd "$WORK"
echo "working in $WORK"

/usr/bin/time -f '%e s, peak RSS %M KiB' "$BIN" generate --profiles "$PROFILES" --seed 1 --out gen
"$BIN" serve --listen 127.0.0.1:18223 >serve.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf localhost:18223/healthz >/dev/null && break; sleep 0.1; done
dataset() {
  curl -s -X POST localhost:18223/data/foundation/catalog/dataSets -H 'Authorization: Bearer b' \
    -H 'x-api-key: b' -H 'x-gw-ims-org-id: bench' -H 'x-sandbox-name: prod' \
    -H 'Content-Type: application/json' \
    -d "{\"name\":\"$1\",\"schemaRef\":{\"id\":\"$2\"},\"tags\":{\"unifiedProfile\":[\"enabled:true\"]}}" |
    sed 's|.*@/dataSets/\([0-9a-f]*\).*|\1|'
}
P=$(dataset profiles https://ns.adobe.com/xdm/context/profile)
E=$(dataset events https://ns.adobe.com/xdm/context/experienceevent)
kill $PID; wait $PID 2>/dev/null || true
for what in "profiles $P" "events $E"; do
  set -- $what
  echo "== ingest $1"
  /usr/bin/time -f '%e s wall, %P CPU, peak RSS %M KiB' "$BIN" ingest --org bench --sandbox prod \
    --dataset "$2" --quiet "gen/$1.ndjson"
done
