#!/usr/bin/env python3
"""Compares two export outputs as multisets of canonical rows.

    python compare.py A B [--show N] [--schema]

A and B are each a Parquet file, a directory (every *.parquet below it), or a comma-separated
list of files. When both are directories holding subdirectories instead of Parquet files (per
segment outputs, e.g. reference.py's q5/entry=0 .. entry=4 and run.py's q5/entry=0 ..), the
subdirectories are matched by name and compared one by one.

Canonical row: struct and map values become dicts with sorted keys and their null members
dropped; timestamps become epoch milliseconds; lists are sorted, except `timeSeriesEvents`,
whose order is part of the result. Empty structs/maps/lists are kept (an empty list is not a
null). Exit status 0 when every comparison is equal, 1 otherwise.
"""

import argparse
import collections
import datetime
import glob
import json
import os
import sys

import duckdb

ORDERED = {"timeSeriesEvents"}


def files_of(spec):
    if os.path.isdir(spec):
        return sorted(glob.glob(os.path.join(spec, "**", "*.parquet"), recursive=True))
    return [f for f in spec.split(",") if f]


def canon(v, name=None):
    if v is None:
        return None
    if isinstance(v, dict):
        return {k: c for k, c in ((k, canon(x, k)) for k, x in v.items()) if c is not None}
    if isinstance(v, (list, tuple)):
        items = [canon(x) for x in v]
        if name in ORDERED:
            return items
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(round(v.timestamp() * 1000))
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, float) and v.is_integer():
        return v
    return v


def load(files):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if not files:
        return collections.Counter(), []
    rel = con.sql(f"SELECT * FROM read_parquet({files!r}, union_by_name = true, hive_partitioning = false)")
    cols = rel.columns
    schema = list(zip(cols, [str(t) for t in rel.types]))
    rows = collections.Counter()
    for tup in rel.fetchall():
        row = canon(dict(zip(cols, tup)))
        rows[json.dumps(row, sort_keys=True)] += 1
    return rows, schema


def compare(a_files, b_files, label, show, schema):
    a, sa = load(a_files)
    b, sb = load(b_files)
    only_a, only_b = a - b, b - a
    ok = not only_a and not only_b
    print(f"{label}: A {sum(a.values())} rows ({len(a_files)} files), B {sum(b.values())} rows "
          f"({len(b_files)} files): {'IDENTICAL' if ok else 'DIFFERENT'}"
          + ("" if ok else f" ({sum(only_a.values())} rows only in A, "
                           f"{sum(only_b.values())} only in B)"))
    if schema:
        print(f"  schema A {sa}\n  schema B {sb}")
    elif sa != sb and sa and sb:
        print(f"  schemas differ (informational):\n    A {sa}\n    B {sb}")
    for side, diff in (("A", only_a), ("B", only_b)):
        for r in list(diff)[:show]:
            print(f"  only in {side}: {r}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--show", type=int, default=3, help="differing rows to print per side")
    ap.add_argument("--schema", action="store_true", help="always print both schemas")
    args = ap.parse_args()

    def subdirs(p):
        if not os.path.isdir(p) or glob.glob(os.path.join(p, "*.parquet")):
            return None
        return {d.split("=", 1)[-1]: os.path.join(p, d) for d in sorted(os.listdir(p))
                if os.path.isdir(os.path.join(p, d))}

    sa, sb = subdirs(args.a), subdirs(args.b)
    ok = True
    if sa and sb:
        for name in sorted(set(sa) | set(sb)):
            # A missing folder is an empty output (DuckDB's PARTITION_BY writes none for it).
            ok &= compare(files_of(sa[name]) if name in sa else [],
                          files_of(sb[name]) if name in sb else [], name, args.show, args.schema)
    else:
        ok = compare(files_of(args.a), files_of(args.b), "all", args.show, args.schema)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
