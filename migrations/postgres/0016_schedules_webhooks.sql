-- Schedules (`/config/schedules`): a Quartz cron expression in UTC and, for type `export`, the
-- export job body each due time runs. `next_due_ms` is the next time the scheduler fires it
-- (NULL when inactive or when the expression has no later time); firing a due time advances it
-- in the same transaction as the run's row and job, so each due time fires once.
CREATE TABLE schedules (
    id            TEXT    NOT NULL PRIMARY KEY,
    org           TEXT    NOT NULL,
    sandbox       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    properties    TEXT    NOT NULL,
    cron          TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('active', 'inactive')),
    next_due_ms   BIGINT,
    -- The last due time fired, its job (when it made one) and how many due times were skipped
    -- with a run in flight (each also a `missed` run row).
    last_due_ms   BIGINT,
    last_job_id   BIGINT,
    missed        BIGINT  NOT NULL DEFAULT 0,
    -- Delta exports: the ingest time of the last successful run's store snapshot, and the key
    -- (export body and resolved merge policy) it was exported under.
    delta_mark_ms BIGINT,
    delta_key     TEXT,
    create_ms     BIGINT  NOT NULL,
    update_ms     BIGINT  NOT NULL
);
CREATE INDEX schedules_by_tenant ON schedules (org, sandbox, create_ms, id);
CREATE INDEX schedules_due ON schedules (next_due_ms) WHERE state = 'active';

-- One row per fired due time: the unique key is what makes a due time fire exactly once,
-- whichever process fires it.
CREATE TABLE schedule_runs (
    schedule_id TEXT    NOT NULL,
    due_ms      BIGINT  NOT NULL,
    org         TEXT    NOT NULL,
    sandbox     TEXT    NOT NULL,
    -- 'created': a job was made; 'missed': skipped, the previous run still in flight.
    outcome     TEXT    NOT NULL CHECK (outcome IN ('created', 'missed')),
    job_id      BIGINT,
    -- Earlier due times passed while no scheduler ran, folded into this one (catch-up).
    caught_up   BIGINT  NOT NULL DEFAULT 0,
    fired_ms    BIGINT  NOT NULL,
    PRIMARY KEY (schedule_id, due_ms)
);

-- A job made by a schedule names it; a delta run's key, and the ingest time of the store
-- commit its run read (set when the job's task takes its snapshot).
ALTER TABLE export_jobs ADD COLUMN schedule_id TEXT;
ALTER TABLE export_jobs ADD COLUMN delta_key TEXT;
CREATE INDEX export_jobs_by_schedule ON export_jobs (schedule_id, id DESC)
    WHERE schedule_id IS NOT NULL;
ALTER TABLE tasks ADD COLUMN snapshot_ingest_ms BIGINT;

-- Webhook endpoints of a sandbox. `events`: the event types sent, comma-wrapped
-- (`,export.failed,`), NULL for all. After a rotation the previous secret signs too until
-- `previous_until_ms`.
CREATE TABLE webhook_endpoints (
    id                TEXT    NOT NULL PRIMARY KEY,
    org               TEXT    NOT NULL,
    sandbox           TEXT    NOT NULL,
    url               TEXT    NOT NULL,
    description       TEXT    NOT NULL,
    events            TEXT,
    secret            TEXT    NOT NULL,
    previous_secret   TEXT,
    previous_until_ms BIGINT,
    enabled           BOOLEAN NOT NULL,
    disabled_reason   TEXT,
    create_ms         BIGINT  NOT NULL,
    update_ms         BIGINT  NOT NULL
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (org, sandbox, create_ms, id);

-- The outbox: an event is written in the transaction that changes the status it reports,
-- with one delivery per endpoint that takes it; dispatchers claim due deliveries.
CREATE TABLE webhook_events (
    id         BIGSERIAL PRIMARY KEY,
    msg_id     TEXT    NOT NULL UNIQUE,
    org        TEXT    NOT NULL,
    sandbox    TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL
);
CREATE INDEX webhook_events_by_time ON webhook_events (created_ms);
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        BIGINT  NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is due; a claim moves it forward by the claim's lease, so a
    -- dispatcher that dies mid-send leaves it due again.
    next_attempt_ms BIGINT  NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
