-- Q5: segments #0, #19, #31, #59, #99 with segmentPerBatch: one output per segment entry,
-- holding the profiles that match that entry (a profile can be in several); each entry: status
-- realized|existing, the qualification window, fromIngestTimestamp; fields identities.id,
-- personalEmail.address.
--
-- Computed once for all five entries and written with one COPY ... PARTITION_BY (entry):
-- {out}/q5/entry=<i>/data_0.parquet, i = the entry's index in the job (0..4 for segments #0, #19,
-- #31, #59, #99); the partition column is not written into the files. An entry that matches
-- no profile gets no folder.
-- Placeholders ({name}) are filled in by run.py; see its docstring.
--
-- Filter first, merge after, as in Q1: only the membership rows of the five segments are read,
-- resolved per (profile, ns, segment), and only the profiles that qualify for an entry are
-- merged, once each.
COPY (
    WITH
    -- The segment's membership entries in both datasets; recency = (ingest time of the
    -- dataset's batch, line in the batch).
    entries(entry, segmentId, ns) AS (
        VALUES (0, '{seg0}', '{seg_ns}'), (1, '{seg19}', '{seg_ns}'), (2, '{seg31}', '{seg_ns}'),
               (3, '{seg59}', '{seg_ns}'), (4, '{seg99}', '{seg_ns}')),
    mem AS (
        SELECT segmentId, key, ns, status, lastQualificationTime AS lqt,
               {t_base}::BIGINT AS ingest, ord
        FROM read_parquet('{data}/memberships_a.parquet')
        WHERE segmentId IN ('{seg0}', '{seg19}', '{seg31}', '{seg59}', '{seg99}')
        UNION ALL
        SELECT segmentId, key, ns, status, lastQualificationTime, {t_upd}::BIGINT, ord
        FROM read_parquet('{data}/memberships_b.parquet')
        WHERE segmentId IN ('{seg0}', '{seg19}', '{seg31}', '{seg59}', '{seg99}')),
    -- Per (profile, ns, segment): the entry with the latest lastQualificationTime (a missing
    -- one is the earliest), ties to the most recent fragment.
    resolved AS (
        SELECT key, ns, segmentId,
               arg_max({status: status, lqt: lqt},
                       (coalesce(lqt, '-infinity'::TIMESTAMPTZ), ingest, ord)) AS m
        FROM mem GROUP BY key, ns, segmentId),
    -- (profile, entry) for every entry the profile matches
    hits AS (
        SELECT DISTINCT r.key, e.entry
        FROM resolved r JOIN entries e
          ON r.segmentId = e.segmentId AND lower(r.ns) = lower(e.ns)
        WHERE r.m.status IN ('realized', 'existing')
          AND r.m.lqt BETWEEN '{q_start}'::TIMESTAMPTZ AND '{q_end}'::TIMESTAMPTZ),
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
           CASE WHEN email IS NOT NULL THEN {address: email} END AS personalEmail,
           hits.entry
    FROM merged JOIN hits USING (key)
    WHERE updated > {from_ingest}
) TO '{out}/q5' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARTITION_BY (entry));
