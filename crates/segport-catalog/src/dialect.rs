//! The statements that differ between the backends: PostgreSQL's row locks, which SQLite (one
//! writer at a time, so the write transaction itself is the lock) does without, and the way a
//! statement reads rows from a JSON array. Each backend module defines its [`Dialect`];
//! everything else is shared.

/// A backend's versions of the statements that lock rows.
pub(crate) struct Dialect {
    /// Claims the oldest queued task: `$1` attempt id, `$2` owner, `$3` lease expiry, `$4` now,
    /// `$5` the partitions to prefer, `$6` 1 to leave units to the workers that hold them, `$7`
    /// the time after which a worker's announcement counts (see [`claim_sql!`]).
    pub claim_task: &'static str,
    /// The same, passing over tenants that run `$8` tasks already.
    pub claim_task_capped: &'static str,
    /// Locks a merge policy against deletion while a job that uses it is inserted; yields its
    /// version.
    pub lock_policy_shared: &'static str,
    /// Locks a merge policy for deletion, waiting for jobs being inserted with it.
    pub lock_policy_exclusive: &'static str,
    /// Locks ingest batch `$3` of tenant (`$1`, `$2`) while it is `loading` (yields its id).
    pub lock_loading_batch: &'static str,
    /// Locks the task of export job `$1`. Every transaction that changes a task and its job
    /// takes the task first (claims, heartbeats, commits, the reaper), so a cancel does too:
    /// taking them the other way round deadlocks against a concurrent claim.
    pub lock_job_task: &'static str,
    /// Serialises the claims of tenant (`$1`, `$2`) until the transaction ends, so that a
    /// claim counts the tenant's running tasks after every concurrent claim of it committed.
    /// `None` where the single writer serialises every claim anyway.
    pub lock_tenant_claims: Option<&'static str>,
    /// The ids of up to `$2` pending webhook deliveries due at `$1`, the longest waiting first,
    /// locked for the claim (skipping those another dispatcher is claiming).
    pub due_deliveries: &'static str,
    /// Inserts the export jobs in `$1`, a JSON array of rows (`sql/jobs.rs`'s `NewJob`), in
    /// the array's order; yields their ids. A create group of any size is this one statement,
    /// prepared once per connection: statements of a text that varied with the group's size
    /// were parsed and planned anew at every group (benches/README.md, the API section).
    pub insert_jobs: &'static str,
    /// Inserts the export batches in `$1`, a JSON array of `NewBatch`es.
    pub insert_export_batches: &'static str,
    /// Inserts the export tasks in `$1`, a JSON array of `NewTask`s.
    pub insert_export_tasks: &'static str,
}

/// [`Dialect::due_deliveries`] with the backend's locking clause.
macro_rules! due_deliveries_sql {
    ($lock:literal) => {
        concat!(
            "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_ms <= $1 ",
            "ORDER BY next_attempt_ms, id LIMIT $2 ",
            $lock
        )
    };
}

pub(crate) use due_deliveries_sql;

/// The claim statement, with the row-locking clause of the backend (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL, so that concurrent workers never wait for each other's claims). The `capped`
/// form takes `$6`, the per-tenant cap on running tasks: a tenant running that many is passed
/// over (a count per queued task, paid only when a cap is set).
///
/// With `$6 = 1`, a unit of a partition that the claiming worker does not hold but another
/// worker seen after `$7` does is left to that worker: it will run it from its cache, where
/// the claiming worker would fetch its files again.
///
/// The task claimed is the oldest queued one of the tenant whose last claim is oldest (a tenant
/// never claimed comes first): tenants take turns, so one tenant's backlog never holds back
/// another's job. Ordering the queued tasks costs a pass over them per claim, which is small
/// next to the tasks themselves.
macro_rules! claim_sql {
    ($lock:literal) => {
        $crate::dialect::claim_sql!("", $lock)
    };
    (capped, $lock:literal) => {
        $crate::dialect::claim_sql!(
            "AND (SELECT COUNT(*) FROM tasks x WHERE x.state = 'running' \
             AND x.org = t.org AND x.sandbox = t.sandbox) < $8 ",
            $lock
        )
    };
    ($filter:literal, $lock:literal) => {
        concat!(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1, attempt_id = $1, ",
            "lease_owner = $2, lease_expires_ms = $3, updated_ms = $4, ",
            // A unit keeps the snapshot its job's plan fixed; other tasks take theirs anew.
            "snapshot_seq = CASE WHEN unit_no IS NULL THEN NULL ELSE snapshot_seq END ",
            "WHERE id = (SELECT t.id FROM tasks t LEFT JOIN tenant_turns r ",
            "ON r.org = t.org AND r.sandbox = t.sandbox WHERE t.state = 'queued' ",
            "AND NOT ($6 = 1 AND t.unit_no IS NOT NULL AND ',' || $5 || ',' NOT LIKE ",
            "'%,' || CAST(t.partition_no AS TEXT) || ',%' AND EXISTS (SELECT 1 FROM worker_caches w ",
            "WHERE w.owner <> $2 AND w.seen_ms > $7 AND ',' || w.held || ',' LIKE ",
            "'%,' || CAST(t.partition_no AS TEXT) || ',%')) ",
            $filter,
            // Within the tenant's turn, units of partitions the claiming worker holds in its
            // cache come first (`$5`: their numbers, comma-separated), then the oldest.
            "ORDER BY COALESCE(r.turn, 0), CASE WHEN ',' || $5 || ',' LIKE ",
            "'%,' || CAST(t.partition_no AS TEXT) || ',%' THEN 0 ELSE 1 END, t.id LIMIT 1 ",
            $lock,
            ") RETURNING id, kind, org, sandbox, batch_id, job_id, attempt, attempt_id, ",
            "unit_no, partition_no, partition_last, key_from, key_to, snapshot_seq"
        )
    };
}

pub(crate) use claim_sql;
