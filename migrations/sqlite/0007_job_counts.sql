-- Export jobs by tenant and status, maintained rather than counted per scrape: triggers append
-- +1/-1 rows to job_count_deltas, maintenance folds them into job_counts, a count is the sum
-- of both (the PostgreSQL migration of the same number explains the split).
CREATE TABLE job_counts (
    org     TEXT    NOT NULL,
    sandbox TEXT    NOT NULL,
    status  TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (org, sandbox, status)
);
CREATE TABLE job_count_deltas (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    org     TEXT    NOT NULL,
    sandbox TEXT    NOT NULL,
    status  TEXT    NOT NULL,
    n       INTEGER NOT NULL
);
INSERT INTO job_counts (org, sandbox, status, n)
    SELECT org, sandbox, status, COUNT(*) FROM export_jobs GROUP BY org, sandbox, status;

CREATE TRIGGER export_jobs_inserted_counted AFTER INSERT ON export_jobs BEGIN
    INSERT INTO job_count_deltas (org, sandbox, status, n)
        VALUES (NEW.org, NEW.sandbox, NEW.status, 1);
END;
CREATE TRIGGER export_jobs_deleted_counted AFTER DELETE ON export_jobs BEGIN
    INSERT INTO job_count_deltas (org, sandbox, status, n)
        VALUES (OLD.org, OLD.sandbox, OLD.status, -1);
END;
CREATE TRIGGER export_jobs_status_counted AFTER UPDATE OF status ON export_jobs
    WHEN OLD.status IS NOT NEW.status BEGIN
    INSERT INTO job_count_deltas (org, sandbox, status, n)
        VALUES (OLD.org, OLD.sandbox, OLD.status, -1), (NEW.org, NEW.sandbox, NEW.status, 1);
END;
