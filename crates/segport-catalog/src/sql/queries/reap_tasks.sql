-- Tasks whose lease expired: requeued for another attempt, or failed after their last one.
-- $1: now (epoch ms).
UPDATE tasks
SET state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'queued' END,
    lease_owner = NULL,
    lease_expires_ms = NULL,
    -- A unit keeps the snapshot its job's plan fixed.
    snapshot_seq = CASE WHEN unit_no IS NULL THEN NULL ELSE snapshot_seq END,
    updated_ms = $1
WHERE state = 'running' AND lease_expires_ms < $1
RETURNING id, kind, state, batch_id, job_id, unit_no
