#!/usr/bin/env python3
"""DuckDB side of the export benchmark (segport issue 4).

    python run.py convert --gen GENDIR --data DATADIR
    python run.py load --data DATADIR --db DBFILE
    python run.py query --case q1 --data DATADIR --out OUTDIR --params PARAMS [--threads N]
                        [--db DBFILE]

`convert` turns the NDJSON of `segport generate` into the Parquet layout of convert.sql (once,
not timed). `load` copies those Parquet files into native tables of a DuckDB database file (one
table per file, named after it: profiles_a, memberships_a, …, in the files' order, so that each
table's zone maps skip as the files' row-group statistics do) and prints
{"seconds": <load time>, "bytes": <database file size>}; `query --db DBFILE` then runs the same
SQL against those tables instead of the Parquet files (every `read_parquet('{data}/NAME.parquet')`
becomes the table NAME): the engine a DuckDB user reaches for next. `query` runs one case (q1..q5, the SQL of q1.sql..q5.sql) and prints one JSON line:

    {"case": "q1", "seconds": <wall time of the query statements only>, "rows": <rows written>,
     "peak_rss_kib": <peak RSS of this process (Python and DuckDB), from getrusage>,
     "cpu_seconds": <user+sys CPU of the query statements>,
     "rss_before_query_kib": <the same just before the query>, "threads": <DuckDB threads>,
     ["rows_per_segment": {"<entry>:<segment id>": rows, ...}]}  (q5 only)

PARAMS is a JSON object (inline, or @FILE, or a path to a .json file such as the params.json
that reference.py writes) with:

    t_base, t_upd, t_events   ingest times (epoch ms) of dataset A (profiles), dataset B
                              (updates) and the events dataset; t_upd > t_base
    from_ingest               filter.fromIngestTimestamp in epoch ms (default t_base - 1)
    ev_from, ev_to            eventList window in epoch ms (default t_events -/+ 1)
    q_start, q_end            filter.segmentQualificationTime, RFC 3339
                              (default 2025-06-01T00:00:00Z .. 2026-06-01T00:00:00Z)
    seg0, seg19, seg31, seg59, seg99
                              segment ids (index in segments.json); or give --gen GENDIR and
                              they are read from GENDIR/segments.json
    seg_ns                    segment namespace (default ups)

Each case writes its result with COPY ... (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1;
level 1 is what segport's writer uses): OUTDIR/q1.parquet .. OUTDIR/q4.parquet, and for q5
(segmentPerBatch) one folder per segment entry, OUTDIR/q5/entry=<i>/data_0.parquet, i = 0..4 for
segments #0, #19, #31, #59, #99 (the job's order; an entry without rows gets no folder);
rows_per_segment gives the rows of each (counted after the timed part).

Compare the output with segport's using compare.py (reference.py produces segport's output and
the params). t_upd must be later than t_base (dataset B is ingested after A); run.py checks it.
"""

import argparse
import glob
import json
import os
import re
import shutil
import resource
import sys
import time

import duckdb

# Q5's segment entries, in the job's order: segments #0, #19, #31, #59, #99.
SEGMENTS_Q5 = ["seg0", "seg19", "seg31", "seg59", "seg99"]

HERE = os.path.dirname(os.path.abspath(__file__))

# Intermediate (converted) files: which Parquet codec. Not part of the measured output; snappy
# decodes faster than zstd and the files sit in the page cache either way.
CONVERT_CODEC = os.environ.get("DUCK_CONVERT_CODEC", "snappy")
# Memory the one-time conversion may use before it spills (DUCK_CONVERT_MEMORY overrides).
CONVERT_MEMORY = os.environ.get("DUCK_CONVERT_MEMORY", "8GB")
# Slices the events' identities are built in (DUCK_CONVERT_SLICES overrides): by default one
# per 400 MB of events NDJSON, at least 8. A slice's list aggregates do not spill: at 10M (12 GB
# of events) 8 slices ran out of 14 GB.
CONVERT_SLICES_SET = os.environ.get("DUCK_CONVERT_SLICES")


def convert_slices(gen):
    if CONVERT_SLICES_SET:
        return int(CONVERT_SLICES_SET)
    try:
        size = os.path.getsize(os.path.join(gen, "events.ndjson"))
    except OSError:
        size = 0
    return max(8, -(-size // 400_000_000))


# The converted files, each loaded as the table of the same name by `load`.
TABLES = ["profiles_a", "profiles_b", "memberships_a", "memberships_b", "events"]


def connect(threads=None, db=None):
    # In memory (nothing but the Parquet files is read), or the database file `load` made,
    # read-only: the query writes only its output.
    con = duckdb.connect(db, read_only=True) if db else duckdb.connect()
    # Settings a skilled DuckDB user sets for this job; everything else is DuckDB's default.
    # - preserve_insertion_order=false: an export has no defined row order (segport's rows come
    #   in partition order), so DuckDB may write the Parquet output in parallel without
    #   re-establishing the scan order. (Orders inside a row, timeSeriesEvents, are explicit.)
    # - threads: DuckDB's default is the number of cores (2 here); --threads overrides it.
    # The COPY statements also set COMPRESSION_LEVEL 1 (zstd level 1, segport's level), and
    # DuckDB's default memory_limit (80% of RAM) is left alone.
    con.execute("SET preserve_insertion_order = false")
    # - no progress bar: stdout carries only the JSON line (no effect on speed).
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def sql_sections(path):
    """Splits a .sql file into its `-- @@ name` sections (the whole file as '' if none)."""
    text = open(path).read()
    parts = re.split(r"^-- @@ (.+)$", text, flags=re.M)
    sections = {"": parts[0]}
    for name, body in zip(parts[1::2], parts[2::2]):
        sections[name.strip()] = body
    return sections


def statements(sql):
    """Splits SQL text on ';' at the end of a line (our files end each statement so), and drops
    whole-line comments."""
    sql = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", sql, flags=re.M) if s.strip()]


def convert(args):
    os.makedirs(args.data, exist_ok=True)
    sec = sql_sections(os.path.join(HERE, "convert.sql"))
    # The intermediate tables go to a database file, not memory, and DuckDB spills beyond its
    # memory limit to a temporary directory: held in memory, 1M profiles took about 13 GB, so
    # 10M would not fit. Both are removed at the end.
    db = os.path.join(args.data, "convert.duckdb")
    tmp = os.path.join(args.data, "convert.tmp")
    for leftover in (db, db + ".wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    con = duckdb.connect(db)
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET temp_directory = '{tmp}'")
    con.execute(f"SET memory_limit = '{CONVERT_MEMORY}'")
    t0 = time.time()
    slices = convert_slices(args.gen)
    jobs = [(sec["profile dataset"], {"src": os.path.join(args.gen, "profiles.ndjson"), "ds": "a"}),
            (sec["profile dataset"], {"src": os.path.join(args.gen, "updates.ndjson"), "ds": "b"}),
            (sec["events"], {})]
    for body, extra in jobs:
        # A conversion that stopped halfway resumes after the datasets it finished.
        outputs = ([f"profiles_{extra['ds']}.parquet", f"memberships_{extra['ds']}.parquet"]
                   if "ds" in extra else ["events.parquet"])
        done = all(os.path.exists(os.path.join(args.data, o)) for o in outputs)
        subst = {"gen": args.gen, "data": args.data, "codec": CONVERT_CODEC, **extra}
        for stmt in statements(body):
            # A finished dataset's macros are still defined: later sections use them.
            if done and not stmt.lstrip().upper().startswith(("SET", "CREATE OR REPLACE TEMP MACRO")):
                continue
            for k in range(slices if "{slice}" in stmt else 1):
                sliced = stmt if k == 0 else stmt.replace(
                    "CREATE OR REPLACE TABLE ids AS", "INSERT INTO ids", 1)
                values = {**subst, "slice": k, "slices": slices}
                sliced = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)])
                                if m.group(1) in values else m.group(0), sliced)
                res = con.execute(sliced)
            if stmt.lstrip().upper().startswith("SELECT"):
                cols = [d[0] for d in res.description]
                for row in res.fetchall():
                    print(json.dumps(dict(zip(cols, row))), file=sys.stderr)
    segs = os.path.join(args.gen, "segments.json")
    if os.path.exists(segs):
        with open(segs) as f, open(os.path.join(args.data, "segments.json"), "w") as w:
            w.write(f.read())
    con.close()
    os.remove(db)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted in {time.time() - t0:.1f} s", file=sys.stderr)


def load(args):
    """Loads the converted Parquet files into native tables of a new database file (timed)."""
    for leftover in (args.db, args.db + ".wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    con = duckdb.connect(args.db)
    con.execute("SET enable_progress_bar = false")
    t0 = time.perf_counter()
    for table in TABLES:
        path = os.path.join(os.path.abspath(args.data), f"{table}.parquet")
        # Insertion order kept (the default) so that the table is sorted as its file is.
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{path}')")
    con.execute("CHECKPOINT")
    seconds = time.perf_counter() - t0
    con.close()
    print(json.dumps({"seconds": round(seconds, 3), "bytes": os.path.getsize(args.db)}))


def load_params(args):
    spec = args.params
    if spec.startswith("@"):
        spec = open(spec[1:]).read()
    elif spec.endswith(".json") and os.path.exists(spec):
        spec = open(spec).read()
    p = json.loads(spec)
    gen_segments = None
    for d in (args.gen, args.data):
        if d and os.path.exists(os.path.join(d, "segments.json")):
            gen_segments = json.load(open(os.path.join(d, "segments.json")))
            break
    if gen_segments:
        for i in (0, 19, 31, 59, 99):
            p.setdefault(f"seg{i}", gen_segments[i]["id"])
    p.setdefault("seg_ns", "ups")
    p.setdefault("q_start", "2025-06-01T00:00:00Z")
    p.setdefault("q_end", "2026-06-01T00:00:00Z")
    p.setdefault("from_ingest", int(p["t_base"]) - 1)
    p.setdefault("ev_from", int(p["t_events"]) - 1)
    p.setdefault("ev_to", int(p["t_events"]) + 1)
    if int(p["t_upd"]) <= int(p["t_base"]):
        sys.exit("t_upd must be later than t_base: dataset B (updates) is ingested after A")
    # Only plain values go into the SQL text.
    for k, v in p.items():
        if isinstance(v, str) and not re.fullmatch(r"[A-Za-z0-9:._+-]*", v):
            sys.exit(f"parameter {k}={v!r} has characters not allowed in the SQL text")
    return p


def fill(sql, values):
    def repl(m):
        if m.group(1) not in values:
            sys.exit(f"no value for placeholder {{{m.group(1)}}}")
        return str(values[m.group(1)])
    # {name} placeholders; DuckDB struct literals use "{name:" or "{'", which do not match.
    return re.sub(r"\{(\w+)\}", repl, sql)


def query(args):
    p = load_params(args)
    os.makedirs(args.out, exist_ok=True)
    values = {**p, "data": os.path.abspath(args.data), "out": os.path.abspath(args.out),
              "case": args.case}
    # Q2 is Q1's query on the most popular segment.
    values["segment"] = p["seg0"] if args.case == "q2" else p["seg31"]
    sql_file = "q1.sql" if args.case == "q2" else f"{args.case}.sql"
    sql = open(os.path.join(HERE, sql_file)).read()
    if args.db:
        sql = re.sub(r"read_parquet\('\{data\}/(\w+)\.parquet'\)", r"\1", sql)
    stmts = [fill(s, values) for s in statements(sql)]
    if args.case == "q5" and os.path.exists(os.path.join(args.out, "q5")):
        shutil.rmtree(os.path.join(args.out, "q5"))
    con = connect(args.threads, args.db)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    rss_before = ru0.ru_maxrss
    rows = 0
    t0 = time.perf_counter()
    for s in stmts:
        res = con.execute(s).fetchall()
        if s.lstrip().upper().startswith("COPY") and res:
            rows += int(res[0][0])
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    peak = ru1.ru_maxrss
    out = {"case": args.case, "engine": "duckdb-native" if args.db else "duckdb-parquet",
           "seconds": round(seconds, 4), "rows": rows, "peak_rss_kib": peak,
           "cpu_seconds": round(cpu, 3),
           "rss_before_query_kib": rss_before, "threads": con.execute(
               "SELECT current_setting('threads')").fetchone()[0]}
    if args.case == "q5":
        # Not timed: rows of each segment entry's output (PARTITION_BY entry=<i>).
        per = {}
        for i, seg in enumerate(SEGMENTS_Q5):
            folder = os.path.join(args.out, "q5", f"entry={i}")
            files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
            n = con.execute(f"SELECT count(*) FROM read_parquet({files!r})").fetchone()[0] if files else 0
            per[f"{i}:{p[seg]}"] = n
        out["rows_per_segment"] = per
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--gen", required=True)
    c.add_argument("--data", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--data", required=True)
    lo.add_argument("--db", required=True)
    q = sub.add_parser("query")
    q.add_argument("--case", required=True, choices=["q1", "q2", "q3", "q4", "q5"])
    q.add_argument("--data", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--params", required=True)
    q.add_argument("--gen")
    q.add_argument("--threads", type=int)
    q.add_argument("--db")
    args = ap.parse_args()
    if args.cmd == "convert":
        convert(args)
    elif args.cmd == "load":
        load(args)
    else:
        query(args)


if __name__ == "__main__":
    main()
