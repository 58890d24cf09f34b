-- Q3: every profile that has at least one profile fragment, every field: the merged attributes,
-- identities as identityMap, and segmentMembership. No segment filter, no fromIngestTimestamp.
-- Placeholders ({name}) are filled in by run.py; see its docstring.
--
-- The converted files hold identityMap and segmentMembership per fragment in the output shape,
-- so a profile with one fragment is copied as it is. Two paths:
--
-- * Fast path, every key with at most one fragment per dataset: A FULL JOIN B on the key (one
--   pass over each file). B is the more recent fragment (its batch committed after A's:
--   t_upd > t_base, which run.py checks). Merge of a pair (o = A, n = B):
--     - a leaf: n's value where not null, else o's; an object is present when either has it;
--     - identityMap: per namespace, o's identities (primary if either fragment says so,
--       o's authenticatedState, as segport keeps the earliest fragment's), then n's new ones;
--     - segmentMembership: per (ns, segmentId), n's entry when o has none or when n's
--       lastQualificationTime is later or equal (a tie goes to the more recent fragment; a
--       missing time is the earliest), else o's.
-- * General path, the keys that have several fragments in one dataset (none in the generated
--   data, but docs/api.md allows them): all their fragments grouped by key, recency = (ingest time
--   of the dataset's batch, line in the batch); the same rules over any number of fragments.
COPY (
    WITH
    -- keys with more than one fragment in the same dataset: merged by the general path
    dups AS (
        SELECT key FROM read_parquet('{data}/profiles_a.parquet') GROUP BY key HAVING count(*) > 1
        UNION
        SELECT key FROM read_parquet('{data}/profiles_b.parquet') GROUP BY key HAVING count(*) > 1),
    o AS (SELECT * FROM read_parquet('{data}/profiles_a.parquet') ANTI JOIN dups USING (key)),
    n AS (SELECT * FROM read_parquet('{data}/profiles_b.parquet') ANTI JOIN dups USING (key)),
    frag AS (
        SELECT {t_base}::BIGINT AS ingest, * FROM read_parquet('{data}/profiles_a.parquet')
        UNION ALL
        SELECT {t_upd}::BIGINT, * FROM read_parquet('{data}/profiles_b.parquet')),
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
            -- identities sorted, so the oldest fragment's come first
            list_sort(flatten(list(list_transform(identities, lambda i: {
                ingest: ingest, ord: ord, ns: i.ns, id: i.id, "primary": i."primary",
                authenticatedState: i.authenticatedState})))) AS ids,
            flatten(list(list_transform(segs, lambda s:
                struct_insert(s, ingest := ingest, ord := ord)))) AS segs
        FROM frag SEMI JOIN dups USING (key)
        GROUP BY key),
    resolved AS (
        SELECT *,
            -- identities united per (ns, id): primary if any fragment says so,
            -- authenticatedState of the oldest fragment that has it
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
    -- fast path
    SELECT
        CASE WHEN n.key IS NULL THEN o.homeAddress WHEN o.key IS NULL THEN n.homeAddress
             WHEN o.homeAddress IS NULL AND n.homeAddress IS NULL THEN NULL
             ELSE {city: coalesce(n.homeAddress.city, o.homeAddress.city),
                   country: coalesce(n.homeAddress.country, o.homeAddress.country),
                   postalCode: coalesce(n.homeAddress.postalCode, o.homeAddress.postalCode)} END AS homeAddress,
        CASE WHEN n.key IS NULL THEN o.identityMap WHEN o.key IS NULL THEN n.identityMap
             ELSE map_from_entries(list_transform(
                 list_distinct(list_concat(map_keys(o.identityMap), map_keys(n.identityMap))),
                 lambda ns: {k: ns, v: list_concat(
                     list_transform(coalesce(o.identityMap[ns], []), lambda i: {
                         authenticatedState: i.authenticatedState, id: i.id,
                         "primary": i."primary" OR coalesce(list_bool_or(list_transform(
                             list_filter(coalesce(n.identityMap[ns], []), lambda j: j.id = i.id),
                             lambda j: j."primary")), false)}),
                     list_filter(coalesce(n.identityMap[ns], []), lambda j: NOT list_contains(
                         list_transform(coalesce(o.identityMap[ns], []), lambda i: i.id), j.id)))}))
        END AS identityMap,
        CASE WHEN n.key IS NULL THEN o.loyalty WHEN o.key IS NULL THEN n.loyalty
             WHEN o.loyalty IS NULL AND n.loyalty IS NULL THEN NULL
             ELSE {points: coalesce(n.loyalty.points, o.loyalty.points),
                   tier: coalesce(n.loyalty.tier, o.loyalty.tier)} END AS loyalty,
        CASE WHEN n.key IS NULL THEN o.person WHEN o.key IS NULL THEN n.person
             WHEN o.person IS NULL AND n.person IS NULL THEN NULL
             ELSE {birthDate: coalesce(n.person.birthDate, o.person.birthDate),
                   "name": CASE WHEN o.person."name" IS NULL AND n.person."name" IS NULL THEN NULL
                                ELSE {firstName: coalesce(n.person."name".firstName, o.person."name".firstName),
                                      lastName: coalesce(n.person."name".lastName, o.person."name".lastName)} END}
        END AS person,
        CASE WHEN n.key IS NULL THEN o.personalEmail WHEN o.key IS NULL THEN n.personalEmail
             WHEN o.personalEmail IS NULL AND n.personalEmail IS NULL THEN NULL
             ELSE {address: coalesce(n.personalEmail.address, o.personalEmail.address)} END AS personalEmail,
        CASE WHEN n.segmentMembership IS NULL THEN o.segmentMembership
             WHEN o.segmentMembership IS NULL THEN n.segmentMembership
             ELSE map_from_entries(list_transform(
                 list_distinct(list_concat(map_keys(o.segmentMembership), map_keys(n.segmentMembership))),
                 lambda ns: {k: ns, v: CASE
                     WHEN o.segmentMembership[ns] IS NULL THEN n.segmentMembership[ns]
                     WHEN n.segmentMembership[ns] IS NULL THEN o.segmentMembership[ns]
                     ELSE map_concat(o.segmentMembership[ns], map_from_entries(list_filter(
                         map_entries(n.segmentMembership[ns]), lambda e:
                             o.segmentMembership[ns][e.key] IS NULL OR
                             coalesce(e.value.lastQualificationTime, '-infinity'::TIMESTAMPTZ) >=
                             coalesce(o.segmentMembership[ns][e.key].lastQualificationTime, '-infinity'::TIMESTAMPTZ))))
                     END}))
        END AS segmentMembership
    FROM o FULL JOIN n USING (key)
    UNION ALL
    -- general path
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
) TO '{out}/{case}.parquet' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1);
