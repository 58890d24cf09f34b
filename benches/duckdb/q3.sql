-- Q3: every profile that has at least one profile fragment, every field: the merged attributes,
-- identities as identityMap, and segmentMembership. No segment filter, no fromIngestTimestamp.
-- Placeholders ({name}) are filled in by run.py; see its docstring.
--
-- General form: fragments of both datasets grouped by key. Each leaf is the value of the most
-- recent fragment that has one (recency = (ingest time of the dataset's batch, line in the
-- batch)); an object is present when any fragment has it. Identities are united per (ns, id)
-- (primary if any fragment says so; authenticatedState of the earliest fragment that has the
-- identity, as segport does). Memberships: per (ns, segmentId) the entry with the latest
-- lastQualificationTime (missing = earliest), ties to the most recent fragment.
COPY (
    WITH
    frag AS (
        SELECT {t_base}::BIGINT AS ingest, * FROM read_parquet('{data}/profiles_a.parquet')
        UNION ALL
        SELECT {t_upd}::BIGINT, * FROM read_parquet('{data}/profiles_b.parquet')),
    merged AS (
        SELECT key, count(*) AS n,
            bool_or(homeAddress IS NOT NULL) AS has_home,
            arg_max(homeAddress.city, (ingest, ord)) FILTER (WHERE homeAddress.city IS NOT NULL) AS city,
            arg_max(homeAddress.country, (ingest, ord)) FILTER (WHERE homeAddress.country IS NOT NULL) AS country,
            arg_max(homeAddress.postalCode, (ingest, ord)) FILTER (WHERE homeAddress.postalCode IS NOT NULL) AS postalCode,
            bool_or(loyalty IS NOT NULL) AS has_loyalty,
            arg_max(loyalty.points, (ingest, ord)) FILTER (WHERE loyalty.points IS NOT NULL) AS points,
            arg_max(loyalty.tier, (ingest, ord)) FILTER (WHERE loyalty.tier IS NOT NULL) AS tier,
            bool_or(person IS NOT NULL) AS has_person,
            arg_max(person.birthDate, (ingest, ord)) FILTER (WHERE person.birthDate IS NOT NULL) AS birthDate,
            bool_or(person."name" IS NOT NULL) AS has_name,
            arg_max(person."name".firstName, (ingest, ord)) FILTER (WHERE person."name".firstName IS NOT NULL) AS firstName,
            arg_max(person."name".lastName, (ingest, ord)) FILTER (WHERE person."name".lastName IS NOT NULL) AS lastName,
            bool_or(personalEmail IS NOT NULL) AS has_email,
            arg_max(personalEmail.address, (ingest, ord)) FILTER (WHERE personalEmail.address IS NOT NULL) AS address,
            -- oldest fragment first
            flatten(list(identities ORDER BY ingest, ord)) AS ids,
            flatten(list(list_transform(segs, lambda s: struct_insert(s, ingest := ingest, ord := ord)))) AS segs
        FROM frag
        GROUP BY key),
    resolved AS (
        SELECT *,
            -- identities united per (ns, id)
            CASE WHEN n = 1 THEN ids ELSE list_transform(
                list_distinct(list_transform(ids, lambda x: {ns: x.ns, id: x.id})),
                lambda d: {ns: d.ns, id: d.id,
                           "primary": list_bool_or(list_transform(
                               list_filter(ids, lambda y: y.ns = d.ns AND y.id = d.id),
                               lambda y: y."primary")),
                           authenticatedState: list_filter(
                               ids, lambda y: y.ns = d.ns AND y.id = d.id)[1].authenticatedState})
            END AS uids,
            -- one entry per (ns, segmentId): the one no other entry beats
            CASE WHEN n = 1 THEN segs ELSE list_filter(segs, lambda s: NOT list_bool_or(
                list_transform(segs, lambda t: t.ns = s.ns AND t.segmentId = s.segmentId AND
                    (coalesce(t.lastQualificationTime, '-infinity'::TIMESTAMPTZ), t.ingest, t.ord) >
                    (coalesce(s.lastQualificationTime, '-infinity'::TIMESTAMPTZ), s.ingest, s.ord))))
            END AS usegs
        FROM merged)
    SELECT
        CASE WHEN has_home THEN {city: city, country: country, postalCode: postalCode} END AS homeAddress,
        map_from_entries(list_transform(list_distinct(list_transform(uids, lambda i: i.ns)),
            lambda n: {k: n, v: list_transform(list_filter(uids, lambda i: i.ns = n),
                lambda i: {authenticatedState: i.authenticatedState, id: i.id, "primary": i."primary"})}))
            AS identityMap,
        CASE WHEN has_loyalty THEN {points: points, tier: tier} END AS loyalty,
        CASE WHEN has_person THEN {birthDate: birthDate,
                                   "name": CASE WHEN has_name THEN {firstName: firstName, lastName: lastName} END}
        END AS person,
        CASE WHEN has_email THEN {address: address} END AS personalEmail,
        CASE WHEN len(usegs) > 0 THEN
            map_from_entries(list_transform(list_distinct(list_transform(usegs, lambda s: s.ns)),
                lambda n: {k: n, v: map_from_entries(list_transform(list_filter(usegs, lambda s: s.ns = n),
                    lambda s: {k: s.segmentId, v: {lastQualificationTime: s.lastQualificationTime,
                                                   status: s.status, validUntil: s.validUntil,
                                                   "version": s."version"}}))}))
        END AS segmentMembership
    FROM resolved
) TO '{out}/{case}.parquet' (FORMAT parquet, COMPRESSION zstd);
