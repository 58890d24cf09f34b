-- Tasks whose lease expired: requeued for another attempt, or failed after their last one.
-- $1: now (epoch ms).
UPDATE tasks
SET state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'queued' END,
    lease_owner = NULL,
    lease_expires_ms = NULL,
    snapshot_seq = NULL,
    updated_ms = $1
WHERE state = 'running' AND lease_expires_ms < $1
RETURNING id, kind, state, batch_id, job_id
