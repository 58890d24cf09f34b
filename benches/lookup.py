#!/usr/bin/env python3
"""Profile look-up latency (benches/README.md, "Profile look-ups"): `GET
/data/core/ups/access/entities` for random profiles of a generated store, from concurrent
clients with kept-alive connections, against `segport serve` on a local root.

  1. a fresh catalog database on the PostgreSQL server of SEGPORT_BENCH_DATABASE_URL;
  2. `segport ingest` of `segport generate` data (seed 1): profiles, updates, events;
  3. a warm-up pass, then CLIENTS threads each sending look-ups of random keys for DURATION
     seconds: profiles, then a profile's events;
  4. previews (`POST /segport/preview/export`) of two export cases, three times each;
  5. the console's new-export page (`GET /ui/new`, dev mode), whose segment counts are summed
     from the membership indexes' footers on its first view of a commit and kept for the next.

Prints p50/p95/p99 and the rate per phase. Standard library only; the load generator runs on
the same machine (its CPU share is printed).

    SEGPORT_BIN=target/release/segport python3 benches/lookup.py --profiles 1000000
"""

import argparse
import http.client
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from scale_out import ORG, SANDBOX, Process, free_port, http_json, wait_http

HEADERS = {
    "Authorization": "Bearer bench",
    "x-api-key": "bench",
    "x-gw-ims-org-id": ORG,
    "x-sandbox-name": SANDBOX,
}


def phase(port, paths, clients, seconds):
    """Each client sends requests for random paths until `seconds` pass; answers latencies."""
    latencies = []
    errors = []
    lock = threading.Lock()
    deadline = time.time() + seconds

    def client(seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.time() < deadline:
            path = paths(rng)
            started = time.perf_counter()
            conn.request("GET", path, headers=HEADERS)
            response = conn.getresponse()
            body = response.read()
            mine.append(time.perf_counter() - started)
            if response.status not in (200, 404):
                with lock:
                    errors.append((response.status, body[:200]))
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def report(name, latencies, errors, seconds, cpu):
    q = statistics.quantiles(latencies, n=100)
    print(
        f"| {name} | {len(latencies):,} | {len(latencies) / seconds:,.0f} | {q[49] * 1e3:.1f} | "
        f"{q[94] * 1e3:.1f} | {q[98] * 1e3:.1f} | {max(latencies) * 1e3:.1f} | {len(errors)} | {cpu:.0%} |"
    )
    if errors:
        print(f"first errors: {errors[:3]}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--profiles", type=int, default=1_000_000)
    p.add_argument("--work", default=os.environ.get("SEGPORT_BENCH_DIR", "bench-scale"))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0)
    a = p.parse_args()
    binary = os.environ.get("SEGPORT_BIN", "target/release/segport")
    database = os.environ.get(
        "SEGPORT_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    work = Path(a.work).resolve()
    gen = work / f"gen-{a.profiles}"
    if not (gen / "segments.json").exists():
        subprocess.run([binary, "generate", "--profiles", str(a.profiles), "--out", str(gen)], check=True)
    run_dir = work / f"lookup-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    db_name = f"segport_lookup_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", database, "-qc", f"CREATE DATABASE {db_name}"], check=True)
    env = dict(
        os.environ,
        DATABASE_URL=database.rsplit("/", 1)[0] + "/" + db_name,
        SEGPORT_LOG_FORMAT="json",
        SEGPORT_STORAGE_URL=f"file://{run_dir / 'store'}",
    )
    port = free_port()
    server = Process(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(run_dir / "data")],
        env,
        run_dir / "serve.log",
    )
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(api + "/healthz")

        def dataset(schema):
            body = {"name": "d", "schemaRef": {"id": schema}, "tags": {"unifiedProfile": ["enabled:true"]}}
            return http_json("POST", api + "/data/foundation/catalog/dataSets", body)[0].split("/")[-1]

        profiles = dataset("https://ns.adobe.com/xdm/context/profile")
        updates = dataset("https://ns.adobe.com/xdm/context/profile")
        events = dataset("https://ns.adobe.com/xdm/context/experienceevent")
        for name, ds in [("profiles", profiles), ("updates", updates), ("events", events)]:
            subprocess.run(
                [binary, "ingest", "--quiet", "--org", ORG, "--sandbox", SANDBOX, "--dataset", ds, str(gen / f"{name}.ndjson")],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        n = a.profiles

        def profile_path(rng):
            return (
                "/data/core/ups/access/entities?schema.name=_xdm.context.profile"
                f"&entityIdNS=ECID&entityId=ECID-{rng.randrange(n)}"
            )

        def events_path(rng):
            return (
                "/data/core/ups/access/entities?schema.name=_xdm.context.experienceevent"
                "&relatedSchema.name=_xdm.context.profile"
                f"&relatedEntityIdNS=ECID&relatedEntityId=ECID-{rng.randrange(n)}"
            )

        # Warm the page cache and the server's catalog connections.
        phase(port, profile_path, a.clients, 5)
        print(f"\n{a.profiles:,} profiles, {a.clients} clients, {a.duration:.0f} s per phase\n")
        print("| look-up | requests | per s | p50 ms | p95 ms | p99 ms | max ms | errors | load generator CPU |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, paths in [("profile", profile_path), ("events", events_path)]:
            before = resource.getrusage(resource.RUSAGE_SELF)
            latencies, errors = phase(port, paths, a.clients, a.duration)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (a.duration * os.cpu_count())
            report(name, latencies, errors, a.duration, cpu)
        # Previews of two export cases (benches/README.md): Q1, one segment and two fields;
        # Q3, every profile and every field. Each answers 10 rows.
        export = http_json(
            "POST",
            api + "/data/foundation/catalog/dataSets",
            {"name": "out", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}},
        )[0].split("/")[-1]
        segment = json.loads((gen / "segments.json").read_text())[31]["id"]
        bodies = {
            "Q1": {
                "destination": {"datasetId": export},
                "schema": {"name": "_xdm.context.profile"},
                "fields": "identities.id,personalEmail.address",
                "filter": {"segments": [{"segmentId": segment, "segmentNs": "ups", "status": ["realized", "existing"]}]},
            },
            "Q3": {"destination": {"datasetId": export}, "schema": {"name": "_xdm.context.profile"}},
        }
        print("\n| preview | profiles counted | s (3 runs) |\n|---|---|---|")
        for name, body in bodies.items():
            times = []
            for _ in range(3):
                started = time.perf_counter()
                answer = http_json("POST", api + "/segport/preview/export?rows=10", body)
                times.append(time.perf_counter() - started)
            print(f"| {name} | {answer['totalExportedProfileCounter']:,} | {', '.join(f'{t:.2f}' for t in times)} |")
        # The console's new-export page: the first view of this commit sums the segment counts
        # of every index; the next ones find them kept.
        cookie = {"Cookie": f"segport_ui_tenant={ORG.replace('@', '%40')}~{SANDBOX}"}
        print("\n| console page | view | s | segments listed |\n|---|---|---|---|")
        for view in ["first", "second", "third"]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.perf_counter()
            connection.request("GET", "/ui/new", headers=cookie)
            response = connection.getresponse()
            html = response.read().decode()
            took = time.perf_counter() - started
            assert response.status == 200, (response.status, html[:500])
            listed = html.count('name="segment"')
            print(f"| /ui/new | {view} | {took:.3f} | {listed} |")
        sys.stdout.flush()
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(run_dir)])


if __name__ == "__main__":
    main()
