-- A job's destination dataset as a column of its own, so that a sandbox's jobs can be listed
-- by destination (the console's filter) from an index, newest first, like the other lists.
ALTER TABLE export_jobs ADD COLUMN dataset_id TEXT;
UPDATE export_jobs SET dataset_id = json_extract(spec, '$.destination.datasetId');
CREATE INDEX export_jobs_by_dataset ON export_jobs (org, sandbox, dataset_id, creation_ms DESC, id DESC);
