-- The committed files of batches: the Parquet files an export wrote (listed by Data Access).
CREATE TABLE batch_files (
    batch_id    TEXT   NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    name        TEXT   NOT NULL,
    path        TEXT   NOT NULL,
    row_count   BIGINT NOT NULL,
    byte_count  BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (batch_id, name)
);
