-- The catalog: tenants, datasets, batches, merge policies, export jobs and API tokens.
-- Times are epoch milliseconds (BIGINT) so that both backends store them alike.
-- JSON documents are TEXT: the catalog stores and returns them, it never queries inside them.

CREATE TABLE sandboxes (
    org          TEXT   NOT NULL,
    sandbox      TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (org, sandbox)
);

CREATE TABLE datasets (
    id           TEXT   PRIMARY KEY CHECK (length(id) = 24 AND id NOT GLOB '*[^0-9a-f]*'),
    org          TEXT   NOT NULL,
    sandbox      TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    description  TEXT,
    schema_ref   TEXT   NOT NULL,
    class        TEXT   NOT NULL CHECK (class IN ('export', 'profile', 'experienceevent')),
    tags         TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL
);
CREATE INDEX datasets_by_tenant ON datasets (org, sandbox, created_ms, id);

CREATE TABLE merge_policies (
    org          TEXT    NOT NULL,
    sandbox      TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      BIGINT  NOT NULL CHECK (version >= 1),
    is_default   BOOLEAN NOT NULL,
    body         TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    PRIMARY KEY (org, sandbox, id)
);
-- At most one default policy per sandbox.
CREATE UNIQUE INDEX merge_policies_one_default ON merge_policies (org, sandbox) WHERE is_default = 1;

CREATE TABLE export_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org              TEXT    NOT NULL,
    sandbox          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('NEW', 'PROCESSING', 'SUCCEEDED', 'FAILED')),
    spec             TEXT    NOT NULL,
    merge_policy_id  TEXT    NOT NULL,
    merge_policy     TEXT    NOT NULL,
    errors           TEXT,
    warnings         TEXT,
    progress         TEXT,
    counters         TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    attempt_id       TEXT    NOT NULL DEFAULT '',
    lease_owner      TEXT,
    lease_expires_ms BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT 0,
    request_id       TEXT    NOT NULL,
    creation_ms      BIGINT  NOT NULL,
    update_ms        BIGINT  NOT NULL,
    started_ms       BIGINT,
    finished_ms      BIGINT
);
-- Keyset listing, newest first, with and without a status filter.
CREATE INDEX export_jobs_by_tenant ON export_jobs (org, sandbox, creation_ms DESC, id DESC);
CREATE INDEX export_jobs_by_tenant_status ON export_jobs (org, sandbox, status, creation_ms DESC, id DESC);
-- The queue: the oldest NEW job first.
CREATE INDEX export_jobs_queue ON export_jobs (id) WHERE status = 'NEW';
-- Queued or running jobs that use a policy (a policy in use cannot be deleted).
CREATE INDEX export_jobs_active_policy ON export_jobs (org, sandbox, merge_policy_id)
    WHERE status IN ('NEW', 'PROCESSING');

CREATE TABLE batches (
    id                  TEXT   PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
    org                 TEXT   NOT NULL,
    sandbox             TEXT   NOT NULL,
    dataset_id          TEXT   NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    kind                TEXT   NOT NULL CHECK (kind IN ('export', 'ingest')),
    status              TEXT   NOT NULL CHECK (status IN ('loading', 'staging', 'success', 'failed', 'aborted')),
    job_id              BIGINT REFERENCES export_jobs (id) ON DELETE SET NULL,
    input_format        TEXT,
    record_count        BIGINT,
    failed_record_count BIGINT,
    errors              TEXT,
    created_ms          BIGINT NOT NULL,
    updated_ms          BIGINT NOT NULL,
    completed_ms        BIGINT
);
CREATE INDEX batches_by_tenant ON batches (org, sandbox, created_ms, id);
CREATE INDEX batches_by_dataset ON batches (dataset_id, created_ms, id);
CREATE INDEX batches_by_job ON batches (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE api_tokens (
    id           TEXT   PRIMARY KEY,
    org          TEXT   NOT NULL,
    token_sha256 TEXT   NOT NULL UNIQUE,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT,
    revoked_ms   BIGINT
);
