#!/usr/bin/env python3
"""Schedule firing latency (benches/README.md, "Schedules"): the time from a schedule's due
time to the creation of its job, with one or more api processes running the scheduler.

  1. a fresh catalog database on the PostgreSQL server of SEGPORT_BENCH_DATABASE_URL;
  2. PROCESSES `segport serve --role api` (each runs a scheduler, at --scheduler-tick TICK) and
     one `--role worker` that runs the jobs (empty exports: the store holds nothing);
  3. a schedule firing every 2 s (`*/2 * * * * ?`), active for DURATION seconds;
  4. each job's creation time against its due time (the even second before it).

Prints p50/p99/max and checks that no due time made two jobs. Standard library only.

    SEGPORT_BIN=target/release/segport python3 benches/scheduler.py --processes 2 --tick 1s
"""

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from scale_out import Process, free_port, http_json, wait_http


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--tick", default="1s")
    p.add_argument("--duration", type=float, default=60.0)
    a = p.parse_args()
    binary = os.environ.get("SEGPORT_BIN", "target/release/segport")
    database = os.environ.get(
        "SEGPORT_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    db_name = f"segport_sched_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", database, "-qc", f"CREATE DATABASE {db_name}"], check=True)
    work = Path(tempfile.mkdtemp(prefix="segport-sched-"))
    env = dict(
        os.environ,
        DATABASE_URL=database.rsplit("/", 1)[0] + "/" + db_name,
        SEGPORT_DATA_DIR=str(work / "data"),
    )
    subprocess.run([binary, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    processes = [Process([binary, "serve", "--role", "worker", "--listen", f"127.0.0.1:{free_port()}"], env, work / "worker.log")]
    ports = []
    try:
        for i in range(a.processes):
            port = free_port()
            ports.append(port)
            processes.append(
                Process(
                    [binary, "serve", "--role", "api", "--listen", f"127.0.0.1:{port}", "--scheduler-tick", a.tick],
                    env,
                    work / f"api-{i}.log",
                )
            )
        api = f"http://127.0.0.1:{ports[0]}"
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/healthz")
        dataset = http_json(
            "POST",
            api + "/data/foundation/catalog/dataSets",
            {"name": "out", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}},
        )[0].split("/")[-1]
        body = {"destination": {"datasetId": dataset}, "schema": {"name": "_xdm.context.profile"}}
        schedule = http_json(
            "POST",
            api + "/data/core/ups/config/schedules",
            {"name": "bench", "type": "export", "schedule": "*/2 * * * * ?", "state": "active",
             "properties": {"exportJob": body}},
        )
        time.sleep(a.duration)
        http_json(
            "PATCH",
            api + f"/data/core/ups/config/schedules/{schedule['id']}",
            [{"op": "replace", "path": "/state", "value": "inactive"}],
        )
        jobs = http_json("GET", api + "/export/jobs?limit=1000")["records"]
        created = [j["creationTime"] for j in jobs if j.get("scheduleId") == schedule["id"]]
        due = [c - c % 2000 for c in created]
        assert len(set(due)) == len(due), "a due time made two jobs"
        latency = [c - d for c, d in zip(created, due)]
        missed = http_json("GET", api + f"/data/core/ups/config/schedules/{schedule['id']}")["missedCount"]
        print(
            f"processes={a.processes} tick={a.tick} jobs={len(latency)} missed={missed} "
            f"due→job p50={percentile(latency, 0.5)} ms p99={percentile(latency, 0.99)} ms "
            f"max={max(latency)} ms"
        )
    finally:
        for proc in processes:
            proc.stop()
        subprocess.run(["psql", database, "-qc", f"DROP DATABASE IF EXISTS {db_name}"], check=False)


if __name__ == "__main__":
    main()
