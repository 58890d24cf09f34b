-- How many queued or running tasks write to dataset $1: ingest tasks of its batches, and
-- export jobs not finished whose destination it is.
SELECT
    (SELECT COUNT(*) FROM tasks t JOIN batches b ON t.batch_id = b.id
     WHERE b.dataset_id = $1 AND t.state IN ('queued', 'running'))
  + (SELECT COUNT(*) FROM batches b JOIN export_jobs j ON j.id = b.job_id
     WHERE b.dataset_id = $1 AND j.status IN ('NEW', 'PROCESSING'))
