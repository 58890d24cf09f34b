#!/usr/bin/env python3
"""Scale-out measurements (benches/README.md, "Scale-out"): one export shared by worker
processes, on a local root and on an S3-compatible server, with cold and warm caches.

For each storage root (a local directory; the S3 test server behind a counting proxy):
  1. a fresh catalog database on the PostgreSQL server of SEGPORT_BENCH_DATABASE_URL;
  2. `segport ingest` (direct) of `segport generate` data: profiles, updates, events;
  3. for each repetition, interleaved: each worker layout -- one process with 2 threads and
     2 slots, two processes with 1 thread and 1 slot each, and one process that runs jobs
     whole (no units) -- with a fresh cache (cold), then the same processes again (warm);
     each runs the cases as export jobs through the API (time: the job's totalTime, from
     creation to commit), and on S3 the requests and bytes each job made are counted.

Prints one table per root (median of the repetitions). Standard library only.

    SEGPORT_BIN=target/release/segport python3 benches/scale_out.py --profiles 1000000 \\
        --s3-endpoint http://127.0.0.1:54399
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ORG = "bench"
SANDBOX = "prod"
WINDOW = ("2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z")
TWO_FIELDS = "identities.id,personalEmail.address"
EVENT_FIELDS = "_id,timestamp,eventType,web.webPageDetails.name"
# (name, segment indexes by popularity, fields, events, a batch per segment): the export cases
# Q1-Q5 of benches/README.md.
CASES = [
    ("q1", [31], TWO_FIELDS, False, False),
    ("q2", [0], TWO_FIELDS, False, False),
    ("q3", [], "", False, False),
    ("q4", [31], TWO_FIELDS, True, False),
    ("q5", [0, 19, 31, 59, 99], TWO_FIELDS, False, True),
]
LAYOUTS = [
    # (name, processes, threads per process, slots per process, unit size)
    ("1 process x 2 threads", 1, 2, 2, None),
    ("2 processes x 1 thread", 2, 1, 1, None),
    ("1 process x 2 threads, whole jobs", 1, 2, 2, 10**12),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counts:
    """Requests and bytes through the proxy, by kind."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.requests = {}
            self.bytes_in = 0
            self.bytes_out = 0

    def add(self, kind, sent, received):
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            self.bytes_out += sent
            self.bytes_in += received

    def snapshot(self):
        with self.lock:
            return dict(self.requests), self.bytes_in, self.bytes_out


def counting_proxy(upstream, counts):
    """An HTTP proxy in front of the S3 server that counts what passes."""
    target = urllib.parse.urlparse(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                body = b"".join(chunks)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
            length = len(body or b"")
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
            skip = ("connection", "transfer-encoding", "content-length", "expect")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            headers["Content-Length"] = str(length)
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            query = urllib.parse.urlparse(self.path).query
            kind = self.command
            if self.command == "GET" and ("list-type" in query or "delimiter" in query):
                kind = "LIST"
            elif self.command == "PUT" and "partNumber" in query:
                kind = "PUT part"
            counts.add(kind, length, len(data))
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            # A HEAD answer has no body but tells the object's length.
            size = response.getheader("Content-Length") if self.command == "HEAD" else len(data)
            self.send_header("Content-Length", str(size or 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


class Process:
    def __init__(self, args, env, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in {
        "Authorization": "Bearer bench",
        "x-api-key": "bench",
        "x-gw-ims-org-id": ORG,
        "x-sandbox-name": SANDBOX,
        "Content-Type": "application/json",
    }.items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def wait_http(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--profiles", type=int, default=1_000_000)
    p.add_argument("--work", default=os.environ.get("SEGPORT_BENCH_DIR", "bench-scale"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--s3-endpoint", default=os.environ.get("SEGPORT_TEST_S3_ENDPOINT"))
    p.add_argument("--roots", default="file,s3")
    p.add_argument("--cases", default="q1,q2,q3,q4,q5")
    p.add_argument("--layouts", help="comma-separated layout numbers (1-3) to run; default all")
    p.add_argument("--keep", action="store_true", help="keep each root's run folder (process logs)")
    a = p.parse_args()
    binary = os.environ.get("SEGPORT_BIN", "target/release/segport")
    database = os.environ.get(
        "SEGPORT_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    work = Path(a.work).resolve()
    gen = work / f"gen-{a.profiles}"
    if not (gen / "segments.json").exists():
        subprocess.run([binary, "generate", "--profiles", str(a.profiles), "--out", str(gen)], check=True)
    segments = [s["id"] for s in json.loads((gen / "segments.json").read_text())]

    for root in a.roots.split(","):
        counts = Counts()
        run_dir = work / f"run-{root}-{uuid.uuid4().hex[:8]}"
        run_dir.mkdir(parents=True)
        db_name = f"segport_scale_{uuid.uuid4().hex[:8]}"
        subprocess.run(["psql", database, "-qc", f"CREATE DATABASE {db_name}"], check=True)
        db_url = database.rsplit("/", 1)[0] + "/" + db_name
        env = dict(os.environ, DATABASE_URL=db_url, SEGPORT_LOG_FORMAT="json")
        if root == "s3":
            endpoint = counting_proxy(a.s3_endpoint, counts)
            env.update(
                SEGPORT_STORAGE_URL=f"s3://segport-test/scale-{uuid.uuid4().hex[:8]}",
                AWS_ENDPOINT_URL=endpoint,
                AWS_ALLOW_HTTP="true",
                AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
            )
        else:
            env["SEGPORT_STORAGE_URL"] = f"file://{run_dir / 'store'}"
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        api = Process(
            [binary, "serve", "--role", "api", "--listen", f"127.0.0.1:{port}", "--data-dir", str(run_dir / "api")],
            env,
            run_dir / "api.log",
        )
        wait_http(api_url + "/healthz")

        def dataset(schema, profile=True):
            body = {"name": "d", "schemaRef": {"id": schema}}
            if profile:
                body["tags"] = {"unifiedProfile": ["enabled:true"]}
            out = http_json("POST", api_url + "/data/foundation/catalog/dataSets", body)
            return out[0].split("/")[-1]

        profiles = dataset("https://ns.adobe.com/xdm/context/profile")
        updates = dataset("https://ns.adobe.com/xdm/context/profile")
        events = dataset("https://ns.adobe.com/xdm/context/experienceevent")
        export = dataset("https://ns.adobe.com/xdm/context/profile__union", profile=False)
        loaded = {}
        started = time.time()
        for name, ds in [("profiles", profiles), ("updates", updates), ("events", events)]:
            counts.reset()
            subprocess.run(
                [binary, "ingest", "--quiet", "--org", ORG, "--sandbox", SANDBOX, "--dataset", ds, str(gen / f"{name}.ndjson")],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            batches = http_json("GET", api_url + f"/data/foundation/catalog/batches?dataSet={ds}")
            loaded[name] = max(b["completed"] for b in batches.values())
        ingest_s = time.time() - started
        print(f"{root}: ingested in {ingest_s:.1f} s", file=sys.stderr)

        def body(case):
            name, segs, fields, events, per_segment = case
            job = {
                "destination": {"datasetId": export, "segmentPerBatch": per_segment},
                "schema": {"name": "_xdm.context.profile"},
                "fields": fields,
            }
            if events:
                job["additionalFields"] = {
                    "eventList": {
                        "fields": EVENT_FIELDS,
                        "filter": {
                            "fromIngestTimestamp": rfc3339(loaded["events"] - 1),
                            "toIngestTimestamp": rfc3339(loaded["events"] + 1),
                        },
                    }
                }
            if segs:
                job["filter"] = {
                    "segments": [{"segmentId": segments[i], "segmentNs": "ups", "status": ["realized", "existing"]} for i in segs],
                    "segmentQualificationTime": {"startTime": WINDOW[0], "endTime": WINDOW[1]},
                    "fromIngestTimestamp": rfc3339(loaded["profiles"] - 1),
                }
            return job

        results = {}
        for rep in range(a.repeat):
            chosen = [int(n) - 1 for n in a.layouts.split(",")] if a.layouts else range(len(LAYOUTS))
            for layout in [LAYOUTS[i] for i in chosen]:
                name, processes, threads, slots, unit = layout
                for case in [c for c in CASES if c[0] in a.cases.split(",")]:
                    # Fresh processes with empty caches for each case: its first run is
                    # cold, its second warm (on a local root there is no cache: one run).
                    workers, datas = [], []
                    for w in range(processes):
                        wenv = dict(env, RAYON_NUM_THREADS=str(threads), SEGPORT_WORKER_SLOTS=str(slots))
                        if unit:
                            wenv["SEGPORT_EXPORT_UNIT_PROFILES"] = str(unit)
                        wport = free_port()
                        data = run_dir / f"worker-{uuid.uuid4().hex[:8]}"
                        datas.append(data)
                        workers.append(
                            Process(
                                [binary, "serve", "--role", "worker", "--listen", f"127.0.0.1:{wport}", "--data-dir", str(data), "--poll-interval", "50ms"],
                                wenv,
                                data.with_suffix(".log"),
                            )
                        )
                        wait_http(f"http://127.0.0.1:{wport}/healthz")
                    for cache in (["cold", "warm"] if root == "s3" else ["-"]):
                        counts.reset()
                        job = http_json("POST", api_url + "/export/jobs", body(case))
                        while True:
                            got = http_json("GET", api_url + f"/export/jobs/{job['id']}")
                            if got["status"] in ("SUCCEEDED", "FAILED"):
                                break
                            time.sleep(0.01)
                        if got["status"] != "SUCCEEDED":
                            raise SystemExit(f"{case[0]} failed: {got}")
                        seconds = got["metrics"]["totalTime"]["totalTimeInMs"] / 1000
                        requests, bytes_in, bytes_out = counts.snapshot()
                        units = len(got.get("units") or []) or 1
                        key = (name, cache, case[0])
                        results.setdefault(key, []).append(
                            (seconds, requests, bytes_in, bytes_out, units, got["metrics"].get("totalExportedProfileCounter"))
                        )
                        print(f"{root} {rep} {key}: {seconds:.2f} s, {units} units", file=sys.stderr)
                    for w in workers:
                        w.stop()
                    # Their caches hold the whole store each (2.3 GB per million profiles).
                    for data in datas:
                        shutil.rmtree(data, ignore_errors=True)
        api.stop()
        print(f"\n### {root} root, {a.profiles:,} profiles, median of {a.repeat}\n")
        header = "| layout | cache | case | units | rows | time s (runs) |"
        if root == "s3":
            header += " GET | LIST | PUT (+parts) | other | MiB in | MiB out |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for (name, cache, case), runs in results.items():
            times = [r[0] for r in runs]
            line = f"| {name} | {cache} | {case} | {runs[0][4]} | {runs[0][5]} | {statistics.median(times):.2f} ({', '.join(f'{t:.2f}' for t in times)}) |"
            if root == "s3":
                req = runs[len(runs) // 2][1]
                other = sum(v for k, v in req.items() if k not in ("GET", "LIST", "PUT", "PUT part"))
                mib_in = statistics.median(r[2] for r in runs) / 2**20
                mib_out = statistics.median(r[3] for r in runs) / 2**20
                line += f" {req.get('GET', 0)} | {req.get('LIST', 0)} | {req.get('PUT', 0)} (+{req.get('PUT part', 0)}) | {other} | {mib_in:.1f} | {mib_out:.1f} |"
            print(line)
        sys.stdout.flush()
        if a.keep:
            print(f"kept {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
