-- A successful ingest batch can be reverted: its records leave the store. The batch keeps its
-- status column ('success', which every backend's CHECK allows) and shows as `reverted` when
-- this is set. The commit sequence its records were stored at names its rows inside compacted
-- files, which a revert rewrites without them.
ALTER TABLE batches ADD COLUMN reverted_ms BIGINT;
ALTER TABLE batches ADD COLUMN commit_seq BIGINT;
