-- One export job run by many workers: a planning attempt splits the job into units, each a task
-- of its own (kind 'export', with unit_no set) over one partition and a range of profile keys,
-- reading the snapshot the plan fixed (snapshot_seq, kept while the unit waits). A unit's
-- committed output and counters are kept on its task row (result) until the last unit commits
-- the job.
ALTER TABLE tasks ADD COLUMN unit_no INTEGER;
ALTER TABLE tasks ADD COLUMN partition_no INTEGER;
ALTER TABLE tasks ADD COLUMN key_from TEXT;
ALTER TABLE tasks ADD COLUMN key_to TEXT;
ALTER TABLE tasks ADD COLUMN result TEXT;
-- How many units a job was split into (NULL: run as one task), how many have committed, and
-- the union schemas of the plan's snapshot, which type the snapshot's files for every unit.
ALTER TABLE export_jobs ADD COLUMN units_total BIGINT;
ALTER TABLE export_jobs ADD COLUMN units_done BIGINT NOT NULL DEFAULT 0;
ALTER TABLE export_jobs ADD COLUMN unit_schemas TEXT;
-- Every FENCE-th profile key of a store file (JSON array): where a plan may cut a partition
-- into key ranges of about equal size. NULL for files written before.
ALTER TABLE store_files ADD COLUMN key_fences TEXT;
