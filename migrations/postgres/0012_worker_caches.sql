-- What each worker's local cache holds, as the worker last said (every few seconds, and when it
-- changed): the partitions of the store files in it, comma-separated. A claim leaves a fresh unit
-- of a partition another live worker holds to that worker for a short wait (delay scheduling),
-- so that a warm cache is not refetched by an idle worker. A row not refreshed is ignored.
CREATE TABLE worker_caches (
    owner   TEXT   NOT NULL PRIMARY KEY,
    held    TEXT   NOT NULL,
    seen_ms BIGINT NOT NULL
);
