-- The profile store's manifest, the task queue shared by ingest and export, and what the Batch
-- Ingestion API needs.

-- Per sandbox: its partition count, the sequence of store commits (snapshots are taken at a
-- sequence number), the last ingest time handed out, and the union schemas of attributes.
ALTER TABLE sandboxes ADD COLUMN partitions INTEGER NOT NULL DEFAULT 16 CHECK (partitions BETWEEN 1 AND 4096);
ALTER TABLE sandboxes ADD COLUMN commit_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN last_ingest_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN profile_schema TEXT NOT NULL DEFAULT '{"fields":{}}';
ALTER TABLE sandboxes ADD COLUMN event_schema TEXT NOT NULL DEFAULT '{"fields":{}}';
ALTER TABLE sandboxes ADD COLUMN schema_version BIGINT NOT NULL DEFAULT 0;

ALTER TABLE batches ADD COLUMN multiline_json BOOLEAN NOT NULL DEFAULT 0;

-- Files uploaded to an ingest batch (the bytes live in storage under batches/{id}/uploads/).
CREATE TABLE batch_uploads (
    batch_id     TEXT   NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    bytes        BIGINT NOT NULL,
    uploaded_ms  BIGINT NOT NULL,
    PRIMARY KEY (batch_id, name)
);

-- Work for workers. A task is claimed by one attempt at a time; every change to a running task
-- names the attempt it expects, which fences out an attempt whose lease was taken over.
CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL CHECK (kind IN ('ingest', 'export')),
    org              TEXT    NOT NULL,
    sandbox          TEXT    NOT NULL,
    batch_id         TEXT    REFERENCES batches (id) ON DELETE CASCADE,
    job_id           BIGINT  REFERENCES export_jobs (id) ON DELETE CASCADE,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    attempt_id       TEXT,
    lease_owner      TEXT,
    lease_expires_ms BIGINT,
    snapshot_seq     BIGINT,
    created_ms       BIGINT  NOT NULL,
    updated_ms       BIGINT  NOT NULL
);
CREATE INDEX tasks_queue ON tasks (id) WHERE state = 'queued';
CREATE INDEX tasks_leases ON tasks (lease_expires_ms) WHERE state = 'running';
CREATE INDEX tasks_by_batch ON tasks (batch_id);
CREATE INDEX tasks_by_job ON tasks (job_id);

-- The store manifest: which Parquet files make up each sandbox's store. A file is visible to a
-- snapshot at sequence S when seq <= S and it was not removed at or before S.
CREATE TABLE store_files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org          TEXT    NOT NULL,
    sandbox      TEXT    NOT NULL,
    dataset_id   TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('profile', 'event')),
    partition_no INTEGER NOT NULL,
    path         TEXT    NOT NULL UNIQUE,
    batch_id     TEXT,
    -- The ingest time of every row, for files of one batch; NULL for compacted files, whose rows
    -- carry their own.
    ingest_ms    BIGINT,
    seq          BIGINT  NOT NULL,
    removed_seq  BIGINT,
    removed_ms   BIGINT,
    row_count    BIGINT  NOT NULL,
    byte_count   BIGINT  NOT NULL,
    min_key      TEXT    NOT NULL,
    max_key      TEXT    NOT NULL
);
CREATE INDEX store_files_by_sandbox ON store_files (org, sandbox, dataset_id, partition_no, seq);
CREATE INDEX store_files_removed ON store_files (removed_ms) WHERE removed_seq IS NOT NULL;
