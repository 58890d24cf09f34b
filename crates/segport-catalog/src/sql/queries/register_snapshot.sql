-- Records the sandbox's current commit as task $1's snapshot (while attempt $2 holds it) and
-- reads the union schemas of that commit, in one statement so that no commit can slip between
-- reading and recording them. $3, $4: the tenant.
UPDATE tasks
SET snapshot_seq = (SELECT commit_seq FROM sandboxes WHERE org = $3 AND sandbox = $4),
    -- The ingest time of that commit: a delta schedule's next run exports what came after it.
    snapshot_ingest_ms = (SELECT last_ingest_ms FROM sandboxes WHERE org = $3 AND sandbox = $4)
WHERE id = $1 AND attempt_id = $2 AND state = 'running'
RETURNING snapshot_seq,
    (SELECT profile_schema FROM sandboxes WHERE org = $3 AND sandbox = $4),
    (SELECT event_schema FROM sandboxes WHERE org = $3 AND sandbox = $4)
