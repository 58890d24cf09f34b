-- Each upload is stored under an object key of its own, recorded here when the upload is
-- accepted, so that a refused or replaced upload never overwrites the bytes a batch reads.
-- Uploads from before this migration have none and live at their name.
ALTER TABLE batch_uploads ADD COLUMN object TEXT;
