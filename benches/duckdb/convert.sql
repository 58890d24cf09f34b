-- One-time conversion of `segport generate` output (NDJSON) into the Parquet layout the DuckDB
-- side of the benchmark queries. Not timed. run.py runs it: the "profile dataset" section once
-- per profile dataset ({src} = profiles.ndjson as {ds} = a, then updates.ndjson as {ds} = b),
-- then the "events" section. {gen} and {data} are the input and output directories.
--
-- This is what `segport ingest` does for segport (docs/api.md, docs/store.md), done the DuckDB
-- way, one dataset at a time; nothing here looks at two datasets together, so no part of the
-- merge is precomputed:
--   * identities from identityMap and the legacy identities array normalised into one list of
--     {ns, id, primary, authenticatedState}, deduplicated per (ns, id) like segport's ingest
--     (primary OR-ed, first non-null authenticatedState);
--   * the profile key `ns:id` of the primary identity (or of the only one) as a column `key`;
--     records without a usable key, and the other records segport refuses (bad membership
--     status, non-RFC 3339 date-times, events without _id), are counted and dropped;
--   * `ord` = the record's line number in its file: "most recent" within a batch (docs/api.md);
--   * date-times parsed to TIMESTAMPTZ (ms precision, like segport's store);
--   * identities and memberships kept in two forms each: flat lists (identities, segs) for
--     merging, and identityMap / segmentMembership in the export's output shape (MAPs; NULL
--     when a record has no membership), so that a profile with a single fragment is written
--     out as it is;
--   * memberships also written as a separate flat table sorted by segmentId, so that a segment
--     filter reads only the row groups of its segments (Parquet min/max statistics) instead of
--     every profile's list: the one index-like structure of this layout;
--   * Parquet with snappy (DuckDB's default; DUCK_CONVERT_CODEC overrides), default row groups.
--
-- Files in {data}:
--   profiles_a.parquet, profiles_b.parquet (sorted by key)
--       key, ord, identities list<{ns, id, primary, authenticatedState}>,
--       identityMap MAP<ns, list<{authenticatedState, id, primary}>>,
--       segs list<{ns, segmentId, status, lastQualificationTime, version, validUntil}>,
--       segmentMembership MAP<ns, MAP<segmentId, {lastQualificationTime, status, validUntil,
--       version}>>, personalEmail, person, homeAddress, loyalty
--   memberships_a.parquet, memberships_b.parquet (sorted by segmentId, key)
--       segmentId, key, ord, ns, status, lastQualificationTime, version, validUntil
--   events.parquet (sorted by key, timestamp, _id)
--       key, ord, _id, timestamp, eventType, identityMap, web, commerce
-- Attribute columns (personalEmail, person, homeAddress, loyalty; events: eventType, web,
-- commerce) are typed explicitly: the union schema of the generated data.

-- @@ profile dataset
SET preserve_insertion_order = true;  -- rowid of `raw` must be the line number

CREATE OR REPLACE TEMP MACRO rfc3339(s) AS
    regexp_full_match(s, '\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)');
-- date-time → TIMESTAMPTZ truncated to ms (segport keeps epoch ms)
CREATE OR REPLACE TEMP MACRO ts_ms(s) AS date_trunc('millisecond', CAST(s AS TIMESTAMPTZ));
-- identityMap + legacy identities of one record, in input order
CREATE OR REPLACE TEMP MACRO raw_identities(im, legacy) AS list_concat(
    coalesce(flatten(list_transform(map_entries(im), lambda e: list_transform(e.value, lambda i: {
        ns: e.key, id: i.id, "primary": coalesce(i."primary", false),
        authenticatedState: i.authenticatedState}))), []),
    coalesce(list_transform(legacy, lambda i: {
        ns: i.namespace.code, id: i.id, "primary": coalesce(i."primary", false),
        authenticatedState: i.authenticatedState}), []));

CREATE OR REPLACE TABLE raw AS
SELECT * FROM read_json('{src}', format = 'newline_delimited', columns = {
    identityMap: 'MAP(VARCHAR, STRUCT(id VARCHAR, "primary" BOOLEAN, authenticatedState VARCHAR)[])',
    identities: 'STRUCT(id VARCHAR, namespace STRUCT(code VARCHAR), "primary" BOOLEAN, authenticatedState VARCHAR)[]',
    segmentMembership: 'MAP(VARCHAR, MAP(VARCHAR, STRUCT(status VARCHAR, lastQualificationTime VARCHAR, version VARCHAR, validUntil VARCHAR)))',
    personalEmail: 'STRUCT(address VARCHAR)',
    person: 'STRUCT(birthDate VARCHAR, "name" STRUCT(firstName VARCHAR, lastName VARCHAR))',
    homeAddress: 'STRUCT(city VARCHAR, country VARCHAR, postalCode VARCHAR)',
    loyalty: 'STRUCT(points BIGINT, tier VARCHAR)'
});

-- identities per record: deduplicated per (ns, id), as a flat list and as the identityMap
-- (output shape), and the key
CREATE OR REPLACE TABLE ids AS
WITH u AS (
    SELECT rowid AS ord,
           unnest(list_transform(raw_identities(identityMap, identities),
                                 lambda x, p: struct_insert(x, pos := p))) AS i
    FROM raw),
g AS (
    SELECT ord, i.ns AS ns, i.id AS id, bool_or(i."primary") AS prim,
           arg_min(i.authenticatedState, i.pos) FILTER (WHERE i.authenticatedState IS NOT NULL) AS auth,
           min(i.pos) AS pos
    FROM u GROUP BY ALL),
by_ns AS (
    SELECT ord, ns, min(pos) AS pos,
           list({authenticatedState: auth, id: id, "primary": prim} ORDER BY pos) AS l
    FROM g GROUP BY ord, ns),
maps AS (
    SELECT ord, map_from_entries(list({k: ns, v: l} ORDER BY pos)) AS identityMap
    FROM by_ns GROUP BY ord)
SELECT ord,
       list({ns: ns, id: id, "primary": prim, authenticatedState: auth} ORDER BY pos) AS identities,
       any_value(maps.identityMap) AS identityMap,
       CASE WHEN bool_or(coalesce(id, '') = '' OR coalesce(ns, '') = '') THEN NULL
            WHEN count_if(prim) = 1 THEN arg_max(ns || ':' || id, prim)
            WHEN count_if(prim) = 0 AND count(*) = 1 THEN any_value(ns || ':' || id)
       END AS key
FROM g JOIN maps USING (ord) GROUP BY ord;

CREATE OR REPLACE TABLE prof AS
WITH m AS (
    SELECT rowid AS ord, *,
           coalesce(flatten(list_transform(map_entries(segmentMembership), lambda e:
               list_transform(map_entries(e.value), lambda s: {
                   ns: e.key, segmentId: s.key, status: s.value.status,
                   lqt: s.value.lastQualificationTime, version: s.value.version,
                   vu: s.value.validUntil}))), []) AS m
    FROM raw)
SELECT ids.key, m.ord, ids.identities, ids.identityMap,
       list_transform(m.m, lambda s: {
           ns: s.ns, segmentId: s.segmentId, status: s.status,
           lastQualificationTime: ts_ms(s.lqt), version: s.version, validUntil: ts_ms(s.vu)}) AS segs,
       -- the same memberships in the output shape; NULL when there are none
       CASE WHEN len(m.m) > 0 THEN map_from_entries(list_transform(
           list_filter(map_entries(segmentMembership), lambda e: cardinality(e.value) > 0),
           lambda e: {k: e.key, v: map_from_entries(list_transform(map_entries(e.value), lambda s: {
               k: s.key, v: {lastQualificationTime: ts_ms(s.value.lastQualificationTime),
                             status: s.value.status, validUntil: ts_ms(s.value.validUntil),
                             "version": s.value.version}}))}))
       END AS segmentMembership,
       personalEmail, person, homeAddress, loyalty
FROM m JOIN ids USING (ord)
WHERE ids.key IS NOT NULL
  AND NOT coalesce(list_bool_or(list_transform(map_entries(segmentMembership),
                                               lambda e: e.value IS NULL)), false)
  AND coalesce(list_bool_and(list_transform(m.m, lambda s:
          coalesce(s.status IN ('realized', 'existing', 'exited'), false)
          AND (s.lqt IS NULL OR rfc3339(s.lqt)) AND (s.vu IS NULL OR rfc3339(s.vu)))), true);

SELECT '{ds}' AS dataset, r AS records, k AS kept, r - k AS refused
FROM (SELECT count(*) FROM raw) a(r), (SELECT count(*) FROM prof) b(k);

COPY (SELECT * FROM prof ORDER BY key, ord)
TO '{data}/profiles_{ds}.parquet' (FORMAT parquet, COMPRESSION {codec});

COPY (SELECT segmentId, key, ord, ns, status, lastQualificationTime, version, validUntil
      FROM (SELECT key, ord, unnest(segs, recursive := true) FROM prof)
      ORDER BY segmentId, key, ord)
TO '{data}/memberships_{ds}.parquet' (FORMAT parquet, COMPRESSION {codec});

-- @@ events
SET preserve_insertion_order = true;

CREATE OR REPLACE TABLE raw AS
SELECT * FROM read_json('{gen}/events.ndjson', format = 'newline_delimited', columns = {
    _id: 'VARCHAR',
    "timestamp": 'VARCHAR',
    eventType: 'VARCHAR',
    identityMap: 'MAP(VARCHAR, STRUCT(id VARCHAR, "primary" BOOLEAN, authenticatedState VARCHAR)[])',
    identities: 'STRUCT(id VARCHAR, namespace STRUCT(code VARCHAR), "primary" BOOLEAN, authenticatedState VARCHAR)[]',
    web: 'STRUCT(webPageDetails STRUCT("name" VARCHAR, URL VARCHAR))',
    commerce: 'STRUCT("order" STRUCT(priceTotal DOUBLE, currency VARCHAR))'
});

-- In {slices} slices by line number ({slice} = 0, 1, …; run.py repeats the statement, the
-- first creating the table and the others inserting): the list aggregates below do not spill,
-- and 50M events at once do not fit in 16 GB. Each record is in exactly one slice.
CREATE OR REPLACE TABLE ids AS
WITH u AS (
    SELECT rowid AS ord,
           unnest(list_transform(raw_identities(identityMap, identities),
                                 lambda x, p: struct_insert(x, pos := p))) AS i
    FROM raw WHERE rowid % {slices} = {slice}),
g AS (
    SELECT ord, i.ns AS ns, i.id AS id, bool_or(i."primary") AS prim,
           arg_min(i.authenticatedState, i.pos) FILTER (WHERE i.authenticatedState IS NOT NULL) AS auth,
           min(i.pos) AS pos
    FROM u GROUP BY ALL),
by_ns AS (
    SELECT ord, ns, min(pos) AS pos,
           list({authenticatedState: auth, id: id, "primary": prim} ORDER BY pos) AS l
    FROM g GROUP BY ord, ns),
maps AS (
    SELECT ord, map_from_entries(list({k: ns, v: l} ORDER BY pos)) AS identityMap
    FROM by_ns GROUP BY ord)
SELECT ord,
       list({ns: ns, id: id, "primary": prim, authenticatedState: auth} ORDER BY pos) AS identities,
       any_value(maps.identityMap) AS identityMap,
       CASE WHEN bool_or(coalesce(id, '') = '' OR coalesce(ns, '') = '') THEN NULL
            WHEN count_if(prim) = 1 THEN arg_max(ns || ':' || id, prim)
            WHEN count_if(prim) = 0 AND count(*) = 1 THEN any_value(ns || ':' || id)
       END AS key
FROM g JOIN maps USING (ord) GROUP BY ord;

CREATE OR REPLACE TABLE ev AS
SELECT ids.key, r.ord, r._id, ts_ms(r."timestamp") AS "timestamp", r.eventType,
       ids.identityMap, r.web, r.commerce
FROM (SELECT rowid AS ord, * FROM raw) r JOIN ids USING (ord)
WHERE ids.key IS NOT NULL AND coalesce(r._id, '') <> '' AND rfc3339(r."timestamp");

SELECT 'events' AS dataset, r AS records, k AS kept, r - k AS refused
FROM (SELECT count(*) FROM raw) a(r), (SELECT count(*) FROM ev) b(k);

COPY (SELECT * FROM ev ORDER BY key, "timestamp", _id, ord)
TO '{data}/events.parquet' (FORMAT parquet, COMPRESSION {codec});
