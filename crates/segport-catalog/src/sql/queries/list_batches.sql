-- One page of a tenant's batches ($1, $2), optionally of dataset $3 and in status $4 (NULL
-- when absent; 'reverted' is shown for reverted batches, whose status column stays 'success').
SELECT * FROM batches
WHERE org = $1 AND sandbox = $2
  AND ($3 IS NULL OR dataset_id = $3)
  AND ($4 IS NULL
       OR (status = $4 AND reverted_ms IS NULL)
       OR ($4 = 'reverted' AND reverted_ms IS NOT NULL))
ORDER BY created_ms, id
LIMIT $5 OFFSET $6
