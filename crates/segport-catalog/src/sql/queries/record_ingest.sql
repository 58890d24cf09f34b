-- A successful ingest's mark on its sandbox: the ingest time, and the widened union schema of
-- its kind when it brought one (which bumps the schema version).
-- $1, $2: the tenant; $3: ingest time; $4: 'profile' or 'event'; $5: the new schema or NULL.
UPDATE sandboxes
SET last_ingest_ms = $3,
    profile_schema = CASE WHEN $4 = 'profile' THEN COALESCE($5, profile_schema)
                          ELSE profile_schema END,
    event_schema = CASE WHEN $4 = 'event' THEN COALESCE($5, event_schema)
                        ELSE event_schema END,
    schema_version = schema_version + CASE WHEN $5 IS NULL THEN 0 ELSE 1 END
WHERE org = $1 AND sandbox = $2
