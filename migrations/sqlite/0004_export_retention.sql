-- Retention finds finished export batches by completion time. Export batches failed before
-- this migration have no completion time: their last update stands in for it.
UPDATE batches SET completed_ms = updated_ms
    WHERE kind = 'export' AND status = 'failed' AND completed_ms IS NULL;
CREATE INDEX batches_export_completed ON batches (completed_ms, id)
    WHERE kind = 'export' AND status IN ('success', 'failed');
