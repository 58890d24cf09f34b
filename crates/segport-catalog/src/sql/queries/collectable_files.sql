-- Removed store files that no running task's snapshot can still hold, nor a queued unit's (its
-- job's plan fixed it), removed before $1.
SELECT f.id, f.path
FROM store_files f
WHERE f.removed_seq IS NOT NULL
  AND f.removed_ms < $1
  AND NOT EXISTS (
      SELECT 1 FROM tasks t
      WHERE t.state IN ('queued', 'running')
        AND t.org = f.org AND t.sandbox = f.sandbox
        AND t.snapshot_seq IS NOT NULL AND t.snapshot_seq < f.removed_seq)
ORDER BY f.id
LIMIT 1000
