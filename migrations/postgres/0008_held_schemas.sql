-- The part of the union schema each successful ingest batch holds: the fields of its store
-- files, typed as the sandbox typed them. The sandbox's schema is the merge of what live
-- datasets hold, so deleting the dataset that introduced a field releases its type. NULL for
-- batches committed before this migration: a sandbox with such a batch keeps its types.
ALTER TABLE batches ADD COLUMN held_schema TEXT;
-- The schema version a release produced: an ingest attempt that typed its records against an
-- earlier version must type them again, whether or not it changes the schema itself.
ALTER TABLE sandboxes ADD COLUMN released_version BIGINT NOT NULL DEFAULT 0;
