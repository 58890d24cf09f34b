#!/usr/bin/env python3
"""Writes a small hand-made input in the layout of `segport generate` (profiles.ndjson,
updates.ndjson, events.ndjson, segments.json) whose records exercise the docs/api.md rules that
the generated data never hits: ties and order of membership resolution across datasets, a
missing lastQualificationTime, window bounds, namespace case, legacy `identities`, several
fragments of one key in the same dataset, a key only in dataset B, identities that differ
between fragments, partial objects, duplicate event ids, refused records.

    python edgecases.py OUTDIR

Then run reference.py and run.py on OUTDIR like on generated data and compare.
"""

import json
import os
import sys

SEGS = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(100)]
S0, S19, S31, S59, S99 = SEGS[0], SEGS[19], SEGS[31], SEGS[59], SEGS[99]
IN = "2025-07-01T00:00:00Z"        # inside the 2025-06-01 .. 2026-06-01 window
IN2 = "2025-08-01T00:00:00.000Z"
START, END = "2025-06-01T00:00:00Z", "2026-06-01T00:00:00.000Z"


def ecid(n, primary=True, state="ambiguous"):
    e = {"id": f"ECID-{n}", "primary": primary}
    if state:
        e["authenticatedState"] = state
    return e


def prof(n, segs=None, extra_ids=None, **attrs):
    im = {"ECID": [ecid(n)]}
    for ns, e in (extra_ids or []):
        im.setdefault(ns, []).append(e)
    r = {"identityMap": im}
    r.update(attrs)
    if segs is not None:
        sm = {}
        for ns, sid, status, t in segs:
            m = {"status": status}
            if t is not None:
                m["lastQualificationTime"] = t
            sm.setdefault(ns, {})[sid] = m
        r["segmentMembership"] = sm
    return r


def email(n):
    return {"address": f"p{n}@example.com"}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    A, B, E = [], [], []
    person = {"name": {"firstName": "Ada", "lastName": "Lovelace"}, "birthDate": "1815-12-10"}
    # 1: A realized, B exited later -> exited (out of Q1)
    A.append(prof(1, [("ups", S31, "realized", IN)], personalEmail=email(1), person=person,
                  loyalty={"points": 1, "tier": "gold"}, homeAddress={"city": "Paris", "country": "FR", "postalCode": "1"}))
    B.append(prof(1, [("ups", S31, "exited", IN2)], loyalty={"points": 11}))
    # 2: A exited later, B realized earlier -> A wins -> exited
    A.append(prof(2, [("ups", S31, "exited", IN2)], personalEmail=email(2)))
    B.append(prof(2, [("ups", S31, "realized", IN)]))
    # 3: same time -> tie goes to B (more recent) -> realized
    A.append(prof(3, [("ups", S31, "exited", IN)], personalEmail=email(3)))
    B.append(prof(3, [("ups", S31, "realized", "2025-07-01T00:00:00.000Z")], personalEmail={"address": "new3@example.com"}))
    # 4: no lastQualificationTime -> fails the window; B has one in window but exited
    A.append(prof(4, [("ups", S31, "realized", None)], personalEmail=email(4)))
    # 4b: A has a time, B has none -> A's (a missing time is the earliest)
    A.append(prof(40, [("ups", S31, "realized", IN)], personalEmail=email(40)))
    B.append(prof(40, [("ups", S31, "exited", None)]))
    # 5-7: window bounds
    A.append(prof(5, [("ups", S31, "existing", START)], personalEmail=email(5)))
    A.append(prof(6, [("ups", S31, "existing", END)], personalEmail=email(6)))
    A.append(prof(7, [("ups", S31, "existing", "2026-06-01T00:00:00.001Z"), ("ups", S0, "realized", IN)],
                  personalEmail=email(7)))
    A.append(prof(70, [("ups", S31, "existing", "2025-05-31T23:59:59.999Z")], personalEmail=email(70)))
    # 8-9: namespace case
    A.append(prof(8, [("UPS", S31, "realized", IN)], personalEmail=email(8)))
    A.append(prof(9, [("ups", S31, "exited", IN), ("Ups", S31, "realized", IN)], personalEmail=email(9)))
    # 10: legacy identities only, two identities, one primary
    A.append({"identities": [{"id": "L-10", "namespace": {"code": "ECID"}, "primary": True},
                             {"id": "CRM-10", "namespace": {"code": "CRMID"}}],
              "personalEmail": email(10),
              "segmentMembership": {"ups": {S31: {"status": "realized", "lastQualificationTime": IN}}}})
    # 11: two fragments of one key in A; the later one exits at the same time -> exited
    A.append(prof(11, [("ups", S31, "realized", IN)], personalEmail=email(11)))
    A.append(prof(11, [("ups", S31, "exited", IN)], person={"name": {"firstName": "Later"}}))
    # 12: two fragments in A; later realizes, has no email, adds an identity; B adds loyalty
    A.append(prof(12, [("ups", S31, "exited", IN)], personalEmail=email(12),
                  person={"name": {"firstName": "Early", "lastName": "Twelve"}}))
    A.append(prof(12, [("ups", S31, "realized", IN2), ("ups", S59, "realized", IN)],
                  extra_ids=[("Email", {"id": "p12@example.com", "primary": False})],
                  person={"name": {"firstName": "Later"}}))
    B.append(prof(12, None, loyalty={"points": 12, "tier": "silver"}))
    # 13: only in B
    B.append(prof(13, [("ups", S31, "realized", IN)], personalEmail=email(13)))
    # 14: identities differ between A and B
    A.append(prof(14, [("ups", S31, "realized", IN)], personalEmail=email(14)))
    B.append({"identityMap": {"ECID": [ecid(14, True, "authenticated")],
                              "CRMID": [{"id": "CRM-14", "primary": False}]},
              "loyalty": {"points": 14}})
    # 15: partial objects: B has a first name only
    A.append(prof(15, [("ups", S31, "realized", IN)], person=person, personalEmail=email(15)))
    B.append(prof(15, None, person={"name": {"firstName": "Bea"}}))
    # 16: empty segmentMembership in A, B brings one
    A.append(prof(16, [], personalEmail=email(16)))
    B.append(prof(16, [("ups", S0, "realized", IN), ("ups", S99, "existing", IN)]))
    # 17: Email primary; events keyed by Email
    A.append({"identityMap": {"ECID": [ecid(17, False)],
                              "Email": [{"id": "p17@example.com", "primary": True, "authenticatedState": "authenticated"}]},
              "personalEmail": email(17),
              "segmentMembership": {"ups": {S31: {"status": "existing", "lastQualificationTime": IN}}}})
    # 18: the same id in two namespaces
    A.append({"identityMap": {"ECID": [{"id": "X-18", "primary": True}], "CRMID": [{"id": "X-18"}]},
              "segmentMembership": {"ups": {S31: {"status": "realized", "lastQualificationTime": IN},
                                            S59: {"status": "existing", "lastQualificationTime": IN}}}})
    # 19: the same identity twice in one record, primary on the second mention
    A.append({"identityMap": {"ECID": [{"id": "ECID-19"}, {"id": "ECID-19", "primary": True, "authenticatedState": "loggedOut"}]},
              "personalEmail": email(19),
              "segmentMembership": {"ups": {S31: {"status": "realized", "lastQualificationTime": "2025-07-01T02:00:00+02:00"}}}})
    # 21: A's identity has no authenticatedState, B's has one (segport keeps the earliest
    # fragment's, null here)
    A.append(prof(21, [("ups", S31, "realized", IN)], personalEmail=email(21)))
    A[-1]["identityMap"]["ECID"][0].pop("authenticatedState")
    B.append({"identityMap": {"ECID": [ecid(21, True, "authenticated")]}, "loyalty": {"points": 21}})
    # refused records: no identity, ambiguous primary, bad status, bad date-time
    A.append({"personalEmail": {"address": "nobody@example.com"}})
    A.append({"identityMap": {"A": [{"id": "1"}], "B": [{"id": "2"}]}})
    A.append(prof(90, [("ups", S31, "gone", IN)]))
    A.append(prof(91, [("ups", S31, "realized", "2025-07-01")]))
    # a member of segment #31 with no other fields
    A.append(prof(20, [("ups", S31, "realized", IN)]))

    def ev(_id, key_n, ts, etype="web.webpagedetails.pageViews", page="home", primary_ns="ECID", **kw):
        r = {"_id": _id, "timestamp": ts, "eventType": etype}
        if primary_ns == "ECID":
            r["identityMap"] = {"ECID": [{"id": f"ECID-{key_n}", "primary": True}]}
        else:
            r["identityMap"] = {"Email": [{"id": f"p{key_n}@example.com", "primary": True}]}
        if page is not None:
            r["web"] = {"webPageDetails": {"name": page, "URL": f"https://x/{page}"}}
        r.update(kw)
        return r

    E += [
        ev("e3-b", 3, "2025-03-01T00:00:00Z"),
        ev("e3-a", 3, "2025-03-01T00:00:00Z", page="cart"),        # same time: by _id
        ev("e3-c", 3, "2025-01-01T00:00:00Z", page=None),           # no web
        ev("e3-a", 3, "2025-03-01T00:00:00Z", etype="commerce.purchases", page="checkout"),  # replaces e3-a
        ev("e5-1", 5, "2025-02-01T00:00:00Z", web={"webPageDetails": {"URL": "https://x/nameless"}}),
        ev("e17-1", 17, "2025-02-01T00:00:00Z", primary_ns="Email"),
        ev("e99-1", 99, "2025-02-01T00:00:00Z"),                     # a profile without records
        {"timestamp": "2025-02-01T00:00:00Z", "identityMap": {"ECID": [{"id": "ECID-3", "primary": True}]}},  # no _id
        ev("e13-1", 13, "2025-04-01T00:00:00.123Z", commerce={"order": {"priceTotal": 9.5, "currency": "EUR"}}),
    ]
    for name, rows in (("profiles", A), ("updates", B), ("events", E)):
        with open(os.path.join(out, f"{name}.ndjson"), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    with open(os.path.join(out, "segments.json"), "w") as f:
        json.dump([{"id": s, "ns": "ups", "name": f"segment {i:02d}", "popularity": 0.0}
                   for i, s in enumerate(SEGS)], f, indent=1)


if __name__ == "__main__":
    main()
