#!/usr/bin/env bash
# Times GET /export/jobs with 1M jobs in the catalog: the first page and a page deep in the list
# (keyset cursor), on PostgreSQL and on the embedded SQLite catalog.
#
#   benches/list-jobs-1m.sh [JOBS]        (default 1000000; needs PostgreSQL on 127.0.0.1:5432)
#
# It builds the release binary, fills a throwaway database with JOBS jobs of one tenant (the worst
# case: every row shares the index prefix), serves it on 127.0.0.1:18181 and reports curl timings
# (median of 20 requests) plus the query plan of the deep page.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-1000000}
ADMIN=${SEGPORT_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
DB=segport_bench_list
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/segport-target}
cargo build --release -q -p segport
BIN=$CARGO_TARGET_DIR/release/segport
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

ORG=BenchOrg@AdobeOrg
SPEC='{"destination":{"datasetId":"5b7c86968f7b6501e21ba9df","segmentPerBatch":false,"batchId":"da5cfb4de32c4b93a09f7e37fa53ad52"},"schema":{"name":"_xdm.context.profile"},"filter":{"emptyProfiles":false},"mergePolicy":{"id":"timestampOrdered-none-mp","version":1},"profileInstanceId":"ups"}'

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

time_page() { # url -> median seconds over 20 requests
  for _ in $(seq 20); do
    curl -s -o /dev/null -w '%{time_total}\n' "$1" -H 'Authorization: Bearer b' -H 'x-api-key: b' \
      -H "x-gw-ims-org-id: $ORG" -H 'x-sandbox-name: prod'
  done | median
}

serve_and_time() { # label env...
  local label=$1; shift
  env "$@" "$BIN" serve --listen 127.0.0.1:18181 >"$WORK/$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf localhost:18181/healthz >/dev/null && break; sleep 0.1; done
  local base="http://127.0.0.1:18181/export/jobs"
  # The cursor of the job at 90% depth: creation_ms = 1e12 + id, so the cursor is computable.
  local deep_id=$((JOBS / 10))
  echo "$label first page (limit=50):          $(time_page "$base?limit=50") s"
  echo "$label deep page (offset at job $deep_id): $(time_page "$base?limit=50&offset=$((1000000000000 + deep_id))_$deep_id") s"
  echo "$label deep page with status=NEW:      $(time_page "$base?limit=50&status=NEW&offset=$((1000000000000 + deep_id))_$deep_id") s"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "== PostgreSQL, $JOBS jobs"
psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
URL=${ADMIN%/*}/$DB
"$BIN" migrate --database-url "$URL" 2>/dev/null
psql "$URL" -qc "INSERT INTO sandboxes VALUES ('$ORG', 'prod', 0)" \
  -c "INSERT INTO export_jobs (org, sandbox, status, spec, merge_policy_id, merge_policy, request_id, creation_ms, update_ms)
      SELECT '$ORG', 'prod', 'NEW', '$SPEC', 'timestampOrdered-none-mp', '{}', 'r', 1000000000000 + g, 1000000000000 + g
      FROM generate_series(1, $JOBS) g" -c "ANALYZE export_jobs"
serve_and_time postgres DATABASE_URL="$URL"
echo "plan of the deep page:"
psql "$URL" -Atc "EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM export_jobs WHERE org = '$ORG' AND sandbox = 'prod'
  AND (creation_ms, id) < ($((1000000000000 + JOBS / 10)), $((JOBS / 10))) ORDER BY creation_ms DESC, id DESC LIMIT 51" | sed 's/^/  /'
psql "$ADMIN" -qc "DROP DATABASE $DB"

echo "== SQLite, $JOBS jobs"
"$BIN" migrate --data-dir "$WORK/sqlite" 2>/dev/null
python3 - "$WORK/sqlite/segport.db" "$JOBS" "$ORG" "$SPEC" <<'PY'
import sqlite3, sys
db, n, org, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = sqlite3.connect(db)
c.execute("INSERT INTO sandboxes VALUES (?, 'prod', 0)", (org,))
c.executemany(
    "INSERT INTO export_jobs (org, sandbox, status, spec, merge_policy_id, merge_policy, request_id, creation_ms, update_ms)"
    " VALUES (?, 'prod', 'NEW', ?, 'timestampOrdered-none-mp', '{}', 'r', ?, ?)",
    ((org, spec, 10**12 + g, 10**12 + g) for g in range(1, n + 1)))
c.commit(); c.execute("ANALYZE"); c.close()
PY
serve_and_time sqlite SEGPORT_DATA_DIR="$WORK/sqlite"
