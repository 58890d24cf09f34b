-- Jobs by tenant and status from the maintained counts (migration 0007): the folded counts plus
-- the deltas not folded yet; tenants and statuses with none left out.
SELECT org, sandbox, status, CAST(SUM(n) AS BIGINT) AS n
FROM (SELECT org, sandbox, status, n FROM job_counts
      UNION ALL
      SELECT org, sandbox, status, n FROM job_count_deltas) c
GROUP BY org, sandbox, status
HAVING SUM(n) <> 0
ORDER BY org, sandbox, status
