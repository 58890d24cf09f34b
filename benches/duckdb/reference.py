#!/usr/bin/env python3
"""Runs the five benchmark cases through segport itself, to get reference outputs for
compare.py and the ingest times (t_base, t_upd, t_events) that run.py's queries take.

    python reference.py --gen GENDIR --data DATADIR --out OUTDIR [--bin SEGPORT] [--port 18555]
                        [--cases q1,q2,q3,q4,q5] [--from-offset MS]

Starts `segport serve` on an empty DATADIR (embedded SQLite, dev auth), creates the datasets
(profiles = dataset A, updates = dataset B, events, and one export destination), ingests
profiles.ndjson, updates.ndjson and events.ndjson in that order with `segport ingest`, runs the
jobs Q1..Q5 and writes:

    OUTDIR/params.json          the parameters of every case (feed it to run.py --params)
    OUTDIR/q1/ ... OUTDIR/q4/   the committed Parquet parts of each job's batch (Data Access)
    OUTDIR/q5/entry=<i>/        one folder per segment entry of Q5 (segmentPerBatch), i = 0..4
                                for segments #0, #19, #31, #59, #99 (the job's order)
    OUTDIR/jobs.json            the finished job objects (metrics, timings)

Standard library only; needs the segport binary (default /work/bin/segport).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

HEADERS = {
    "Authorization": "Bearer x",
    "x-api-key": "x",
    "x-gw-ims-org-id": "bench",
    "x-sandbox-name": "prod",
    "Content-Type": "application/json",
}
ORG, SANDBOX = "bench", "prod"


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=HEADERS)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def dataset(base, name, schema, profile_store=True):
    body = {"name": name, "schemaRef": {"id": schema}}
    if profile_store:
        body["tags"] = {"unifiedProfile": ["enabled:true"]}
    ans = call(base, "POST", "/data/foundation/catalog/dataSets", body)
    return ans[0].split("/")[-1]


def batch_of(base, ds):
    batches = call(base, "GET", f"/data/foundation/catalog/batches?dataSet={ds}")
    (bid, b), = batches.items()
    assert b["status"] == "success", b
    return bid, b


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def params_for(gen):
    segs = json.load(open(os.path.join(gen, "segments.json")))
    return {
        "seg0": segs[0]["id"],
        "seg19": segs[19]["id"],
        "seg31": segs[31]["id"],
        "seg59": segs[59]["id"],
        "seg99": segs[99]["id"],
        "seg_ns": "ups",
        "q_start": "2025-06-01T00:00:00Z",
        "q_end": "2026-06-01T00:00:00Z",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", default="/work/bin/segport")
    ap.add_argument("--port", type=int, default=18555)
    ap.add_argument("--cases", default="q1,q2,q3,q4,q5")
    ap.add_argument("--from-offset", type=int, default=-1,
                    help="filter.fromIngestTimestamp = t_base + this many ms (default -1: every "
                         "profile passes; 0 keeps only the profiles that dataset B updated)")
    a = ap.parse_args()
    if os.path.exists(a.data) and os.listdir(a.data):
        sys.exit(f"{a.data} is not empty")
    os.makedirs(a.out, exist_ok=True)
    base = f"http://127.0.0.1:{a.port}"
    log = open(os.path.join(a.out, "serve.log"), "w")
    server = subprocess.Popen(
        [a.bin, "serve", "--listen", f"127.0.0.1:{a.port}", "--data-dir", a.data],
        stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        if server.poll() is not None:
            sys.exit(f"segport serve exited; see {a.out}/serve.log")
        profile = "https://ns.adobe.com/xdm/context/profile"
        ds_a = dataset(base, "profiles", profile)
        ds_b = dataset(base, "updates", profile)
        ds_e = dataset(base, "events", "https://ns.adobe.com/xdm/context/experienceevent")
        ds_x = dataset(base, "exports", "https://ns.adobe.com/xdm/context/profile__union", False)
        times = {}
        for name, ds, file in (("t_base", ds_a, "profiles.ndjson"),
                               ("t_upd", ds_b, "updates.ndjson"),
                               ("t_events", ds_e, "events.ndjson")):
            t0 = time.time()
            subprocess.run([a.bin, "ingest", "--data-dir", a.data, "--org", ORG, "--sandbox",
                            SANDBOX, "--dataset", ds, "--quiet", os.path.join(a.gen, file)],
                           check=True, stdout=log, stderr=log)
            bid, b = batch_of(base, ds)
            times[name] = b["completed"]
            print(f"ingested {file}: batch {bid} records {b.get('recordCount')} failed "
                  f"{b.get('failedRecordCount')} completed {b['completed']} "
                  f"({time.time() - t0:.1f} s)", file=sys.stderr)
        p = params_for(a.gen)
        p.update(times)
        p["from_ingest"] = p["t_base"] + a.from_offset
        p["ev_from"] = p["t_events"] - 1
        p["ev_to"] = p["t_events"] + 1
        json.dump(p, open(os.path.join(a.out, "params.json"), "w"), indent=1)

        window = {"startTime": p["q_start"], "endTime": p["q_end"]}
        fields = "identities.id,personalEmail.address"

        def seg_filter(*ids):
            return {"segments": [{"segmentId": s} for s in ids], "segmentQualificationTime": window,
                    "fromIngestTimestamp": iso(p["from_ingest"])}

        jobs = {
            "q1": {"fields": fields, "filter": seg_filter(p["seg31"])},
            "q2": {"fields": fields, "filter": seg_filter(p["seg0"])},
            "q3": {},
            "q4": {"fields": fields, "filter": seg_filter(p["seg31"]),
                   "additionalFields": {"eventList": {
                       "fields": "_id,timestamp,eventType,web.webPageDetails.name",
                       "filter": {"fromIngestTimestamp": iso(p["ev_from"]),
                                  "toIngestTimestamp": iso(p["ev_to"])}}}},
            "q5": {"fields": fields,
                   "filter": seg_filter(p["seg0"], p["seg19"], p["seg31"], p["seg59"], p["seg99"])},
        }
        done = {}
        for case in a.cases.split(","):
            body = dict(jobs[case])
            body["schema"] = {"name": "_xdm.context.profile"}
            body["destination"] = {"datasetId": ds_x, "segmentPerBatch": case == "q5"}
            job = call(base, "POST", "/export/jobs", body)
            while job["status"] not in ("SUCCEEDED", "FAILED"):
                time.sleep(0.1)
                job = call(base, "GET", f"/export/jobs/{job['id']}")
            done[case] = job
            m = job["metrics"]
            print(f"{case}: {job['status']} rows {m.get('totalExportedProfileCounter')} export ms "
                  f"{m['profileExportTime']['totalTimeInMs']} {job.get('errors', '')}"
                  f"{job.get('warnings', '')}", file=sys.stderr)
            if job["status"] != "SUCCEEDED":
                sys.exit(1)
            dest = job["destination"]
            if case == "q5":
                targets = [(os.path.join(a.out, case, f"entry={i}"), b["batchId"])
                           for i, b in enumerate(dest["batches"])]
            else:
                targets = [(os.path.join(a.out, case), dest["batchId"])]
            for folder, bid in targets:
                os.makedirs(folder, exist_ok=True)
                n = 0
                # Data Access lists only committed files; download each one.
                for ds_file in call(base, "GET", f"/data/foundation/export/batches/{bid}/files")["data"]:
                    fid = ds_file["dataSetFileId"]
                    for f in call(base, "GET", f"/data/foundation/export/files/{fid}")["data"]:
                        req = urllib.request.Request(
                            f"{base}/data/foundation/export/files/{fid}?path={f['name']}",
                            headers=HEADERS)
                        with urllib.request.urlopen(req) as r, \
                                open(os.path.join(folder, f["name"].replace("/", "_")), "wb") as w:
                            w.write(r.read())
                        n += 1
                assert n > 0, (case, bid)
        json.dump(done, open(os.path.join(a.out, "jobs.json"), "w"), indent=1)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
