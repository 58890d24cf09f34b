-- Q3: every profile that has at least one profile fragment, every field: the merged attributes,
-- identities as identityMap, and segmentMembership. No segment filter, no fromIngestTimestamp.
-- Placeholders ({name}) are filled in by run.py; see its docstring.
--
-- Most profiles have a single fragment, and a single fragment IS its merged profile: the
-- converted files already hold identityMap and segmentMembership in the output shape, so those
-- rows are copied as they are. Only the keys with two or more fragments (in any datasets, the
-- same dataset included) are merged:
--   * each leaf is the value of the most recent fragment that has one (recency = (ingest time
--     of the dataset's batch, line in the batch)); an object is present when a fragment has it;
--   * identities are united per (ns, id): primary if a fragment says so, authenticatedState of
--     the earliest fragment that has the identity (as segport does);
--   * memberships: per (ns, segmentId) the entry with the latest lastQualificationTime (a missing
--     one is the earliest), ties to the most recent fragment.
COPY (
    WITH
    frag AS (
        SELECT {t_base}::BIGINT AS ingest, * FROM read_parquet('{data}/profiles_a.parquet')
        UNION ALL
        SELECT {t_upd}::BIGINT, * FROM read_parquet('{data}/profiles_b.parquet')),
    multi AS (
        SELECT key
        FROM (SELECT key FROM read_parquet('{data}/profiles_a.parquet')
              UNION ALL
              SELECT key FROM read_parquet('{data}/profiles_b.parquet'))
        GROUP BY key HAVING count(*) > 1),
    merged AS (
        SELECT key,
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
            -- every fragment's identities and memberships, tagged with the fragment's recency;
            -- sorted, so the oldest fragment comes first
            list_sort(flatten(list(list_transform(identities, lambda i: {
                ingest: ingest, ord: ord, ns: i.ns, id: i.id, "primary": i."primary",
                authenticatedState: i.authenticatedState})))) AS ids,
            flatten(list(list_transform(segs, lambda s:
                struct_insert(s, ingest := ingest, ord := ord)))) AS segs
        FROM frag SEMI JOIN multi USING (key)
        GROUP BY key),
    resolved AS (
        SELECT *,
            list_transform(
                list_distinct(list_transform(ids, lambda x: {ns: x.ns, id: x.id})),
                lambda d: {ns: d.ns, id: d.id,
                           "primary": list_bool_or(list_transform(
                               list_filter(ids, lambda y: y.ns = d.ns AND y.id = d.id),
                               lambda y: y."primary")),
                           authenticatedState: list_filter(
                               ids, lambda y: y.ns = d.ns AND y.id = d.id)[1].authenticatedState})
                AS uids,
            -- one entry per (ns, segmentId): the one no other entry beats
            list_filter(segs, lambda s: NOT list_bool_or(list_transform(segs, lambda t:
                t.ns = s.ns AND t.segmentId = s.segmentId AND
                (coalesce(t.lastQualificationTime, '-infinity'::TIMESTAMPTZ), t.ingest, t.ord) >
                (coalesce(s.lastQualificationTime, '-infinity'::TIMESTAMPTZ), s.ingest, s.ord))))
                AS usegs
        FROM merged)
    SELECT homeAddress, identityMap, loyalty, person, personalEmail, segmentMembership
    FROM frag ANTI JOIN multi USING (key)
    UNION ALL
    SELECT
        CASE WHEN has_home THEN {city: city, country: country, postalCode: postalCode} END,
        map_from_entries(list_transform(list_distinct(list_transform(uids, lambda i: i.ns)),
            lambda n: {k: n, v: list_transform(list_filter(uids, lambda i: i.ns = n),
                lambda i: {authenticatedState: i.authenticatedState, id: i.id, "primary": i."primary"})})),
        CASE WHEN has_loyalty THEN {points: points, tier: tier} END,
        CASE WHEN has_person THEN {birthDate: birthDate,
                                   "name": CASE WHEN has_name THEN {firstName: firstName, lastName: lastName} END}
        END,
        CASE WHEN has_email THEN {address: address} END,
        CASE WHEN len(usegs) > 0 THEN
            map_from_entries(list_transform(list_distinct(list_transform(usegs, lambda s: s.ns)),
                lambda n: {k: n, v: map_from_entries(list_transform(list_filter(usegs, lambda s: s.ns = n),
                    lambda s: {k: s.segmentId, v: {lastQualificationTime: s.lastQualificationTime,
                                                   status: s.status, validUntil: s.validUntil,
                                                   "version": s."version"}}))}))
        END
    FROM resolved
) TO '{out}/{case}.parquet' (FORMAT parquet, COMPRESSION zstd);
