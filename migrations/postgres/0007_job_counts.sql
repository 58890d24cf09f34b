-- Export jobs by tenant and status, maintained rather than counted per scrape. Triggers append
-- a +1/-1 row per change to job_count_deltas (appends only: no row is shared, so no lock is
-- taken that concurrent changes could wait on or deadlock over); maintenance folds the deltas
-- into job_counts now and then. A count is the sum of both tables.
CREATE TABLE job_counts (
    org     TEXT   NOT NULL,
    sandbox TEXT   NOT NULL,
    status  TEXT   NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (org, sandbox, status)
);
CREATE TABLE job_count_deltas (
    id      BIGSERIAL PRIMARY KEY,
    org     TEXT   NOT NULL,
    sandbox TEXT   NOT NULL,
    status  TEXT   NOT NULL,
    n       BIGINT NOT NULL
);
INSERT INTO job_counts (org, sandbox, status, n)
    SELECT org, sandbox, status, COUNT(*) FROM export_jobs GROUP BY org, sandbox, status;

CREATE FUNCTION segport_count_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO job_count_deltas (org, sandbox, status, n)
            VALUES (OLD.org, OLD.sandbox, OLD.status, -1);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO job_count_deltas (org, sandbox, status, n)
            VALUES (NEW.org, NEW.sandbox, NEW.status, 1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER export_jobs_counted AFTER INSERT OR DELETE ON export_jobs
    FOR EACH ROW EXECUTE FUNCTION segport_count_job();
CREATE TRIGGER export_jobs_status_counted AFTER UPDATE OF status ON export_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION segport_count_job();
