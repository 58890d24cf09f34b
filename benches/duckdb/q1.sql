-- Q1 and Q2: one segment (#31, ~5%, for Q1; #0, ~30%, for Q2; placeholder segment), status
-- realized|existing, qualification window, fromIngestTimestamp; fields identities.id,
-- personalEmail.address.
-- Placeholders ({name}) are filled in by run.py; see its docstring.
--
-- Filter first, merge after: only the membership rows of the one segment are read (the
-- memberships files are sorted by segmentId, so Parquet min/max statistics skip every other row
-- group), resolved per (profile, ns) across both datasets, and only the profiles that qualify
-- are merged.
COPY (
    WITH
    -- The segment's membership entries in both datasets; recency = (ingest time of the
    -- dataset's batch, line in the batch).
    mem AS (
        SELECT key, ns, status, lastQualificationTime AS lqt, {t_base}::BIGINT AS ingest, ord
        FROM read_parquet('{data}/memberships_a.parquet')
        WHERE segmentId = '{segment}' AND lower(ns) = lower('{seg_ns}')
        UNION ALL
        SELECT key, ns, status, lastQualificationTime, {t_upd}::BIGINT, ord
        FROM read_parquet('{data}/memberships_b.parquet')
        WHERE segmentId = '{segment}' AND lower(ns) = lower('{seg_ns}')),
    -- Per (profile, ns, segment): the entry with the latest lastQualificationTime (a missing
    -- one is the earliest), ties to the most recent fragment.
    resolved AS (
        SELECT key,
               arg_max({status: status, lqt: lqt},
                       (coalesce(lqt, '-infinity'::TIMESTAMPTZ), ingest, ord)) AS m
        FROM mem GROUP BY key, ns),
    hits AS (
        SELECT DISTINCT key FROM resolved
        WHERE m.status IN ('realized', 'existing')
          AND m.lqt BETWEEN '{q_start}'::TIMESTAMPTZ AND '{q_end}'::TIMESTAMPTZ),
    frag AS (
        SELECT key, {t_base}::BIGINT AS ingest, ord, identities, personalEmail.address AS email
        FROM read_parquet('{data}/profiles_a.parquet')
        UNION ALL
        SELECT key, {t_upd}::BIGINT, ord, identities, personalEmail.address
        FROM read_parquet('{data}/profiles_b.parquet')),
    -- Merge of the qualifying profiles: update time = latest ingest time of the fragments;
    -- the address of the most recent fragment that has one; identities united per (ns, id).
    merged AS (
        SELECT key, max(ingest) AS updated,
               arg_max(email, (ingest, ord)) FILTER (WHERE email IS NOT NULL) AS email,
               CASE WHEN count(*) = 1
                    THEN any_value(list_transform(identities, lambda i: {ns: i.ns, id: i.id}))
                    ELSE list_distinct(flatten(list(
                             list_transform(identities, lambda i: {ns: i.ns, id: i.id}))))
               END AS ids
        FROM frag SEMI JOIN hits USING (key)
        GROUP BY key)
    SELECT list_transform(ids, lambda i: {id: i.id}) AS identities,
           CASE WHEN email IS NOT NULL THEN {address: email} END AS personalEmail
    FROM merged
    WHERE updated > {from_ingest}
) TO '{out}/{case}.parquet' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1);
