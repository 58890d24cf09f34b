-- The worker processes alive, as each says every few seconds: its host, its task slots and when
-- it started. Operators see them (the console's workers page); a row not refreshed is a worker
-- gone, forgotten after an hour.
CREATE TABLE workers (
    owner      TEXT    NOT NULL PRIMARY KEY,
    host       TEXT    NOT NULL,
    slots      INTEGER NOT NULL,
    started_ms BIGINT  NOT NULL,
    seen_ms    BIGINT  NOT NULL
);
