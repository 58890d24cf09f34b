//! `segport-bench export`: the export cases Q1–Q5 as real jobs through segport's API and, on
//! the same generated data converted once to Parquet, in DuckDB; both outputs are digested and
//! must agree before a ratio is reported.
//!
//! Everything slow to make is cached by (profiles, seed) under the work directory: the
//! generated NDJSON, segport's store (with the ingest figures of the run that made it) and
//! DuckDB's Parquet copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::canon::{digest_files, Digest};
use crate::client::{Client, Tenant};
use crate::proc::{self, drop_page_cache, Server};

const ORG: &str = "bench";
const SANDBOX: &str = "prod";
const ADDR: &str = "127.0.0.1:18571";
/// The qualification window of Q1, Q2, Q4 and Q5 (inclusive).
const WINDOW: (&str, &str) = ("2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z");
/// Segments by index in `segments.json` (most popular first): ~30%, ~10%, ~5%, ~1%, ~0.1%.
const SEG_30: usize = 0;
const SEG_10: usize = 19;
const SEG_5: usize = 31;
const SEG_1: usize = 59;
const SEG_01: usize = 99;
const EVENT_FIELDS: &str = "_id,timestamp,eventType,web.webPageDetails.name";
const TWO_FIELDS: &str = "identities.id,personalEmail.address";

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Profiles to generate.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where generated data, stores and outputs are kept (cached by profiles and seed).
    #[arg(long, env = "SEGPORT_BENCH_DIR", default_value = "bench-data")]
    work: PathBuf,
    /// Cases to run.
    #[arg(long, value_delimiter = ',', default_value = "q1,q2,q3,q4,q5")]
    cases: Vec<String>,
    /// Keep the NDJSON after both engines loaded it (it is about 2.3 GB per million profiles).
    #[arg(long)]
    keep_ndjson: bool,
    /// Skip DuckDB (segport figures only, no ratios or digests compared).
    #[arg(long)]
    no_duckdb: bool,
    /// Runs per case and engine; the table gives the median time and the highest peak RSS.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Run each case once untimed before its timed runs, per engine (a warm page cache).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    warmup: bool,
    /// Drop the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`, needs root) before every
    /// timed run of every engine, and run no warm-up: times from a cold start.
    #[arg(long)]
    cold: bool,
    /// Skip the second DuckDB reference: the Parquet copy loaded into native tables of a
    /// DuckDB database file.
    #[arg(long)]
    no_duckdb_native: bool,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// One case: the job's segments (by index), fields, events and batching.
struct Case {
    name: &'static str,
    segments: &'static [usize],
    fields: &'static str,
    events: bool,
    per_segment: bool,
}

const CASES: [Case; 5] = [
    Case { name: "q1", segments: &[SEG_5], fields: TWO_FIELDS, events: false, per_segment: false },
    Case { name: "q2", segments: &[SEG_30], fields: TWO_FIELDS, events: false, per_segment: false },
    Case { name: "q3", segments: &[], fields: "", events: false, per_segment: false },
    Case { name: "q4", segments: &[SEG_5], fields: TWO_FIELDS, events: true, per_segment: false },
    Case {
        name: "q5",
        segments: &[SEG_30, SEG_10, SEG_5, SEG_1, SEG_01],
        fields: TWO_FIELDS,
        events: false,
        per_segment: true,
    },
];

/// What loading the store measured, kept with the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Loaded {
    profile_dataset: String,
    update_dataset: String,
    event_dataset: String,
    t_base: i64,
    t_upd: i64,
    t_events: i64,
    counts: Counts,
    /// Per input: wall seconds and peak RSS (KiB) of `segport ingest`.
    ingest: Vec<(String, f64, u64)>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counts {
    profiles: u64,
    updates: u64,
    events: u64,
}

fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn count_lines(path: &Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

fn tenant() -> Tenant {
    Tenant { token: "bench".into(), org: ORG.into(), sandbox: SANDBOX.into() }
}

/// Creates a dataset through the Catalog API and returns its id.
pub(crate) async fn create_dataset(
    client: &mut Client,
    name: &str,
    schema: &str,
) -> anyhow::Result<String> {
    let body = json!({
        "name": name,
        "schemaRef": {"id": schema, "contentType": "application/vnd.adobe.xed+json;version=1"},
        "tags": {"unifiedProfile": ["enabled:true"]},
    });
    let answer =
        client.json(Method::POST, "/data/foundation/catalog/dataSets", Some(&body)).await?;
    answer
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|s| s.rsplit('/').next())
        .map(str::to_owned)
        .with_context(|| format!("unexpected dataset answer {answer}"))
}

async fn completed(client: &mut Client, dataset: &str) -> anyhow::Result<i64> {
    let answer = client
        .json(Method::GET, &format!("/data/foundation/catalog/batches?dataSet={dataset}"), None)
        .await?;
    answer
        .as_object()
        .and_then(|o| o.values().filter_map(|b| b["completed"].as_i64()).max())
        .with_context(|| format!("no completed batch in {dataset}: {answer}"))
}

/// Generates the data unless a previous run did.
fn generate(binary: &Path, dir: &Path, args: &ExportArgs) -> anyhow::Result<()> {
    let gen = dir.join("gen");
    if gen.join(".done").exists() {
        return Ok(());
    }
    eprintln!("generating {} profiles (seed {}) into {}", args.profiles, args.seed, gen.display());
    let (secs, _) = proc::run_measured(
        Command::new(binary)
            .args(["generate", "--profiles", &args.profiles.to_string()])
            .args(["--seed", &args.seed.to_string(), "--out"])
            .arg(&gen),
    )?;
    eprintln!("generated in {secs:.1} s");
    std::fs::write(gen.join(".done"), "")?;
    Ok(())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv's python with DuckDB installed (made on first use): `benches/.venv`, or
/// `SEGPORT_BENCH_VENV` (the test script keeps it beside the build, out of the clone).
fn python() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("SEGPORT_BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("benches/.venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("installing DuckDB into {}", venv.display());
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?.success();
        anyhow::ensure!(ok, "python3 -m venv failed");
    }
    let has = Command::new(&python)
        .args(["-c", "import duckdb"])
        .stderr(std::process::Stdio::null())
        .status()?
        .success();
    if !has {
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(repo_root().join("benches/duckdb/requirements.txt"))
            .status()?
            .success();
        anyhow::ensure!(ok, "installing duckdb failed");
    }
    Ok(python)
}

fn duckdb_script() -> PathBuf {
    repo_root().join("benches/duckdb/run.py")
}

/// Converts the NDJSON to DuckDB's Parquet copy unless a previous run did.
fn convert(dir: &Path) -> anyhow::Result<()> {
    let data = dir.join("duckdb");
    if data.join(".done").exists() {
        return Ok(());
    }
    eprintln!("converting the NDJSON for DuckDB into {}", data.display());
    let (secs, _) = proc::run_measured(
        Command::new(python()?)
            .arg(duckdb_script())
            .arg("convert")
            .arg("--gen")
            .arg(dir.join("gen"))
            .arg("--data")
            .arg(&data),
    )?;
    eprintln!("converted in {secs:.1} s");
    std::fs::write(data.join(".done"), "")?;
    Ok(())
}

/// Loads the store unless a previous run did: datasets made through the API, each file loaded
/// by `segport ingest` (timed), ingest times read back from the catalog.
async fn load(binary: &Path, dir: &Path) -> anyhow::Result<Loaded> {
    let record = dir.join("segport-loaded.json");
    if let Ok(text) = std::fs::read_to_string(&record) {
        return Ok(serde_json::from_str(&text)?);
    }
    let data = dir.join("segport");
    let _ = std::fs::remove_dir_all(&data);
    let data_arg = data.to_string_lossy().into_owned();
    let log = dir.join("serve-load.log");
    let server = Server::start(binary, ADDR, &["--data-dir", &data_arg], &[], &log).await?;
    let mut client = Client::connect(ADDR, tenant()).await?;
    const PROFILE: &str = "https://ns.adobe.com/xdm/context/profile";
    const EVENT: &str = "https://ns.adobe.com/xdm/context/experienceevent";
    let profile_dataset = create_dataset(&mut client, "profiles", PROFILE).await?;
    let update_dataset = create_dataset(&mut client, "updates", PROFILE).await?;
    let event_dataset = create_dataset(&mut client, "events", EVENT).await?;
    drop(client);
    server.stop()?;

    let gen = dir.join("gen");
    let counts = Counts {
        profiles: count_lines(&gen.join("profiles.ndjson"))?,
        updates: count_lines(&gen.join("updates.ndjson"))?,
        events: count_lines(&gen.join("events.ndjson"))?,
    };
    let mut ingest = Vec::new();
    for (file, dataset) in
        [("profiles", &profile_dataset), ("updates", &update_dataset), ("events", &event_dataset)]
    {
        eprintln!("segport ingest {file}");
        let (secs, kib) = proc::run_measured(
            Command::new(binary)
                .args([
                    "ingest",
                    "--link",
                    "--data-dir",
                    &data_arg,
                    "--org",
                    ORG,
                    "--sandbox",
                    SANDBOX,
                ])
                .args(["--dataset", dataset, "--quiet"])
                .arg(gen.join(format!("{file}.ndjson"))),
        )?;
        ingest.push((file.to_owned(), secs, kib));
    }
    let server = Server::start(binary, ADDR, &["--data-dir", &data_arg], &[], &log).await?;
    let mut client = Client::connect(ADDR, tenant()).await?;
    let loaded = Loaded {
        t_base: completed(&mut client, &profile_dataset).await?,
        t_upd: completed(&mut client, &update_dataset).await?,
        t_events: completed(&mut client, &event_dataset).await?,
        profile_dataset,
        update_dataset,
        event_dataset,
        counts,
        ingest,
    };
    drop(client);
    server.stop()?;
    std::fs::write(&record, serde_json::to_vec_pretty(&loaded)?)?;
    Ok(loaded)
}

fn job_body(case: &Case, segments: &[String], loaded: &Loaded, destination: &str) -> Value {
    let mut body = json!({
        "destination": {"datasetId": destination, "segmentPerBatch": case.per_segment},
        "schema": {"name": "_xdm.context.profile"},
        "fields": case.fields,
    });
    if !case.segments.is_empty() {
        body["filter"] = json!({
            "segments": case.segments.iter().map(|i| json!({
                "segmentId": segments[*i], "segmentNs": "ups", "status": ["realized", "existing"],
            })).collect::<Vec<_>>(),
            "segmentQualificationTime": {"startTime": WINDOW.0, "endTime": WINDOW.1},
            "fromIngestTimestamp": rfc3339(loaded.t_base - 1),
        });
    }
    if case.events {
        body["additionalFields"] = json!({"eventList": {
            "fields": EVENT_FIELDS,
            "filter": {
                "fromIngestTimestamp": rfc3339(loaded.t_events - 1),
                "toIngestTimestamp": rfc3339(loaded.t_events + 1),
            },
        }});
    }
    body
}

/// The parameters DuckDB's SQL takes (benches/duckdb/run.py documents them).
fn duckdb_params(segments: &[String], loaded: &Loaded) -> Value {
    let mut params = json!({
        "t_base": loaded.t_base,
        "t_upd": loaded.t_upd,
        "t_events": loaded.t_events,
        "from_ingest": loaded.t_base - 1,
        "ev_from": loaded.t_events - 1,
        "ev_to": loaded.t_events + 1,
        "q_start": WINDOW.0,
        "q_end": WINDOW.1,
        "seg_ns": "ups",
    });
    for i in [SEG_30, SEG_10, SEG_5, SEG_1, SEG_01] {
        params[format!("seg{i}")] = json!(segments[i]);
    }
    params
}

fn parquet_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(parquet_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The bytes of a store by kind of file: the durable Parquet data files, and the companions
/// built from them (kept beside them on a local root, in the cache on a remote one).
#[derive(Debug, Default)]
struct StoreBytes {
    parquet: u64,
    rows: u64,
    indexes: u64,
}

impl StoreBytes {
    fn of(dir: &Path) -> anyhow::Result<Self> {
        let mut bytes = Self::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let entry = entry?;
                let meta = entry.metadata()?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if name.ends_with(".rows.arrow") {
                    bytes.rows += meta.len();
                } else if name.ends_with(".members.arrow") || name.ends_with(".members.parquet") {
                    bytes.indexes += meta.len();
                } else if name.ends_with(".parquet") {
                    bytes.parquet += meta.len();
                }
            }
        }
        Ok(bytes)
    }
}

fn bytes_of(files: &[PathBuf]) -> u64 {
    files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}

/// segport's side of one case.
struct SegportRun {
    /// As the client sees it: from sending the create to reading SUCCEEDED (polled every
    /// 10 ms).
    seconds: f64,
    /// The job's own `metrics.totalTime`: creation to commit.
    job_seconds: f64,
    rows: u64,
    bytes: u64,
    peak_kib: u64,
    /// Per output batch.
    digests: Vec<Digest>,
}

async fn run_segport(
    server: &Server,
    client: &mut Client,
    data: &Path,
    body: &Value,
) -> anyhow::Result<SegportRun> {
    proc::reset_peak_rss(server.pid())?;
    let started = Instant::now();
    let job = client.json(Method::POST, "/export/jobs", Some(body)).await?;
    let id = job["id"].as_i64().context("job without id")?;
    let (done, seconds) = loop {
        let job = client.json(Method::GET, &format!("/export/jobs/{id}"), None).await?;
        match job["status"].as_str() {
            Some("SUCCEEDED") => break (job, started.elapsed().as_secs_f64()),
            Some("FAILED") => anyhow::bail!("export job {id} failed: {}", job["errors"]),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let peak_kib = proc::peak_rss_kib(server.pid()).unwrap_or(0);
    let metrics = &done["metrics"];
    let job_seconds = metrics["totalTime"]["totalTimeInMs"].as_f64().unwrap_or(0.0) / 1000.0;
    let batches: Vec<String> = match done["destination"]["batches"].as_array() {
        Some(list) => {
            list.iter().filter_map(|b| b["batchId"].as_str().map(str::to_owned)).collect()
        }
        None => done["destination"]["batchId"].as_str().map(str::to_owned).into_iter().collect(),
    };
    let mut digests = Vec::new();
    let mut bytes = 0;
    for batch in &batches {
        let files = parquet_files(&data.join(ORG).join(SANDBOX).join("batches").join(batch))?;
        bytes += bytes_of(&files);
        digests.push(digest_files(&files)?);
    }
    Ok(SegportRun {
        seconds,
        job_seconds,
        rows: metrics["totalExportedProfileCounter"].as_u64().unwrap_or(0),
        bytes,
        peak_kib,
        digests,
    })
}

/// DuckDB's side of one case.
struct DuckRun {
    seconds: f64,
    peak_kib: u64,
    digests: Vec<Digest>,
}

#[derive(Deserialize)]
struct DuckAnswer {
    seconds: f64,
    #[serde(default)]
    peak_rss_kib: u64,
}

/// Where DuckDB's native tables are: a database file loaded from the Parquet copy.
fn native_db(dir: &Path) -> PathBuf {
    dir.join("duckdb-native.duckdb")
}

/// What loading DuckDB's native tables took (kept beside the database file).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct NativeLoad {
    seconds: f64,
    bytes: u64,
}

/// Loads the Parquet copy into native tables unless a previous run did.
fn load_native(dir: &Path) -> anyhow::Result<NativeLoad> {
    let record = dir.join("duckdb-native.json");
    if let Ok(text) = std::fs::read_to_string(&record) {
        return Ok(serde_json::from_str(&text)?);
    }
    eprintln!("loading DuckDB's native tables into {}", native_db(dir).display());
    let loaded: NativeLoad = json_answer(
        Command::new(python()?)
            .arg(duckdb_script())
            .args(["load", "--data"])
            .arg(dir.join("duckdb"))
            .arg("--db")
            .arg(native_db(dir)),
        "DuckDB's load",
    )?;
    std::fs::write(&record, serde_json::to_vec(&loaded)?)?;
    Ok(loaded)
}

/// Runs `command` (a `run.py` step) and reads its answer: the last line of its output that is
/// JSON of the expected shape.
fn json_answer<T: serde::de::DeserializeOwned>(
    command: &mut Command,
    what: &str,
) -> anyhow::Result<T> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("{what} printed no result: {text}"))
}

/// The two forms DuckDB runs a case in: over the Parquet copy, or over native tables.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Duck {
    Parquet,
    Native,
}

fn run_duckdb(dir: &Path, case: &Case, params: &Value, form: Duck) -> anyhow::Result<DuckRun> {
    let out = dir.join(if form == Duck::Native { "out-native" } else { "out" }).join(case.name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let mut command = Command::new(python()?);
    command
        .arg(duckdb_script())
        .args(["query", "--case", case.name, "--threads", "2", "--data"])
        .arg(dir.join("duckdb"))
        .arg("--out")
        .arg(&out)
        .arg("--params")
        .arg(params.to_string());
    if form == Duck::Native {
        command.arg("--db").arg(native_db(dir));
    }
    let answer: DuckAnswer = json_answer(&mut command, &format!("DuckDB {}", case.name))?;
    // One output per batch: `out/{case}.parquet`, or `out/{case}/entry={i}/` per segment entry.
    let digests = if case.per_segment {
        (0..case.segments.len())
            .map(|i| digest_files(&parquet_files(&out.join(case.name).join(format!("entry={i}")))?))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        vec![digest_files(&parquet_files(&out)?)?]
    };
    Ok(DuckRun { seconds: answer.seconds, peak_kib: answer.peak_rss_kib, digests })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Files of one dataset in one partition from which the server compacts (its default
/// `compact_min_files`).
const COMPACT_MIN_FILES: usize = 8;

/// Waits until no partition directory of the store under `data` holds enough data files to
/// be compacted (superseded files go at once with `--file-grace 0s`).
async fn wait_for_compaction(data: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut pending = 0;
        for store in glob_dirs(data, 2)? {
            for dataset in glob_dirs(&store.join("store"), 1)? {
                for partition in glob_dirs(&dataset, 1)? {
                    let files = std::fs::read_dir(&partition)?
                        .filter_map(|e| e.ok())
                        .filter(|e| {
                            let name = e.file_name().to_string_lossy().into_owned();
                            // Data files only, not their companions.
                            name.ends_with(".parquet") && !name.ends_with(".members.parquet")
                        })
                        .count();
                    pending += usize::from(files >= COMPACT_MIN_FILES);
                }
            }
        }
        if pending == 0 {
            if started.elapsed() > Duration::from_secs(2) {
                eprintln!("store compacted in {:.0} s", started.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "{pending} partitions still wait for compaction after an hour"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The directories `depth` levels under `root` (`{org}/{sandbox}` is depth 2).
fn glob_dirs(root: &Path, depth: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut level = vec![root.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            next.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()));
        }
        level = next;
    }
    Ok(level)
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let binary = proc::segport_binary()?;
    std::fs::create_dir_all(&args.work)?;
    let dir = std::path::absolute(args.work.join(format!("n{}-s{}", args.profiles, args.seed)))?;
    std::fs::create_dir_all(&dir)?;
    // Per million profiles: NDJSON ~2.3 GB (unless generated already; segport's batches
    // hard-link it, so deleting it later frees nothing while the store holds its uploads),
    // segport's store ~2.6 GB (Parquet ~0.6 GB, its row files and membership indexes the rest),
    // DuckDB's copy ~0.4 GB, its conversion's spill ~2.4 GB (gone before segport loads), and its
    // native tables ~0.6 GB. The peak is the larger of the conversion and the loads.
    let generated = dir.join("gen/.done").exists();
    let duck = !args.no_duckdb;
    let native = if duck && !args.no_duckdb_native { 600 } else { 0 };
    let convert_phase = if duck { 400 + 2_400 } else { 0 };
    let load_phase = 2_600 + if duck { 400 } else { 0 } + native;
    // What an interrupted conversion already wrote counts as used (its database file is
    // rewritten from the start).
    let present = bytes_of(&parquet_files(&dir.join("duckdb"))?)
        + std::fs::metadata(dir.join("duckdb/convert.duckdb")).map_or(0, |m| m.len());
    let need = (args.profiles
        * (if generated { 0 } else { 2_300 } + convert_phase.max(load_phase)))
    .saturating_sub(present);
    let free = proc::free_bytes(&dir)?;
    let cached = dir.join("segport-loaded.json").exists();
    anyhow::ensure!(
        cached || free > need,
        "{} has {:.1} GB free; {} profiles need about {:.1} GB",
        dir.display(),
        free as f64 / 1e9,
        args.profiles,
        need as f64 / 1e9
    );

    let gen_needed = !cached || (!args.no_duckdb && !dir.join("duckdb/.done").exists());
    if gen_needed {
        generate(&binary, &dir, &args)?;
    }
    if !args.no_duckdb {
        convert(&dir)?;
    }
    let loaded = load(&binary, &dir).await?;
    if !args.keep_ndjson {
        for f in ["profiles", "updates", "events"] {
            let _ = std::fs::remove_file(dir.join("gen").join(format!("{f}.ndjson")));
        }
        let _ = std::fs::remove_file(dir.join("gen/.done"));
    }
    let segments: Vec<String> = {
        let text = std::fs::read_to_string(dir.join("gen/segments.json"))
            .context("no gen/segments.json")?;
        let list: Vec<Value> = serde_json::from_str(&text)?;
        list.iter().filter_map(|s| s["id"].as_str().map(str::to_owned)).collect()
    };

    println!(
        "segport-bench export: {} profiles, seed {}, in {}",
        args.profiles,
        args.seed,
        dir.display()
    );
    for (file, secs, kib) in &loaded.ingest {
        let records = match file.as_str() {
            "profiles" => loaded.counts.profiles,
            "updates" => loaded.counts.updates,
            _ => loaded.counts.events,
        };
        println!(
            "ingest {file:<8} {records:>10} records  {secs:>7.1} s  {:>9.0} records/s  peak RSS {:>6.0} MiB",
            records as f64 / secs,
            mib(*kib)
        );
    }

    let data = dir.join("segport");
    let data_arg = data.to_string_lossy().into_owned();
    // Compaction runs in the server; the cases are timed on the compacted store, not beside
    // a compaction: a server with a 1 s maintenance interval compacts, then the cases run on
    // a server with the default interval (a pass listing the whole store every second would
    // share the two cores with the export being timed).
    let compacting = Server::start(
        &binary,
        ADDR,
        &["--data-dir", &data_arg, "--maintenance-interval", "1s", "--file-grace", "0s"],
        &[],
        &dir.join("serve-compact.log"),
    )
    .await?;
    wait_for_compaction(&data).await?;
    compacting.stop()?;
    // Bytes per profile of the compacted store, as the cases read it.
    let profiles = loaded.counts.profiles.max(1) as f64;
    let store = StoreBytes::of(&data.join(ORG).join(SANDBOX).join("store"))?;
    println!(
        "segport store: Parquet {:.0} MiB ({:.0} bytes/profile), row files {:.0} MiB, membership indexes {:.0} MiB ({:.0} bytes/profile with both)",
        store.parquet as f64 / 1_048_576.0,
        store.parquet as f64 / profiles,
        store.rows as f64 / 1_048_576.0,
        store.indexes as f64 / 1_048_576.0,
        (store.parquet + store.rows + store.indexes) as f64 / profiles,
    );
    if !args.no_duckdb {
        let copy = bytes_of(&parquet_files(&dir.join("duckdb"))?);
        println!(
            "DuckDB's Parquet copy: {:.0} MiB ({:.0} bytes/profile); segport's Parquet is {:.2}× it",
            copy as f64 / 1_048_576.0,
            copy as f64 / profiles,
            store.parquet as f64 / copy.max(1) as f64
        );
    }
    let server = Server::start(
        &binary,
        ADDR,
        &["--data-dir", &data_arg, "--maintenance-interval", "60s"],
        &[],
        &dir.join("serve-export.log"),
    )
    .await?;
    // The first maintenance pass runs at start: let it finish before the first case.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut client = Client::connect(ADDR, tenant()).await?;
    let destination = create_dataset(
        &mut client,
        &format!("bench-out-{}", std::process::id()),
        "https://ns.adobe.com/xdm/context/profile__union",
    )
    .await?;

    println!();
    if args.cold {
        println!("cold: the page cache dropped before every timed run, no warm-up");
    }
    let forms: Vec<Duck> = match (args.no_duckdb, args.no_duckdb_native) {
        (true, _) => vec![],
        (false, true) => vec![Duck::Parquet],
        (false, false) => vec![Duck::Parquet, Duck::Native],
    };
    if forms.contains(&Duck::Native) {
        let native = load_native(&dir)?;
        println!(
            "DuckDB native tables: loaded from the Parquet copy in {:.1} s, database file {:.0} MiB",
            native.seconds,
            native.bytes as f64 / 1_048_576.0
        );
    }
    println!(
        "| case | rows | output MiB | segport s | job s | rows/s | segport peak RSS MiB | DuckDB Parquet s | RSS MiB | ÷ segport | DuckDB native s | RSS MiB | ÷ segport | same rows |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let warmup = args.warmup && !args.cold;
    let mut mismatches = Vec::new();
    for case in CASES.iter().filter(|c| args.cases.iter().any(|n| n == c.name)) {
        let body = job_body(case, &segments, &loaded, &destination);
        // One untimed run first, for each engine: the timed runs all see a warm page cache
        // (a case after another can otherwise find its files evicted, and row files are
        // several times the bytes of DuckDB's Parquet).
        if warmup {
            run_segport(&server, &mut client, &data, &body).await?;
        }
        let mut runs = Vec::new();
        for _ in 0..args.repeat.max(1) {
            if args.cold {
                drop_page_cache()?;
            }
            runs.push(run_segport(&server, &mut client, &data, &body).await?);
        }
        anyhow::ensure!(
            runs.windows(2).all(|w| w[0].digests == w[1].digests),
            "{}: segport's runs disagree",
            case.name
        );
        eprintln!(
            "{}: segport {:?} s",
            case.name,
            runs.iter().map(|r| (r.seconds * 1000.0).round() / 1000.0).collect::<Vec<_>>()
        );
        let seconds = median(runs.iter().map(|r| r.seconds).collect());
        let job_seconds = median(runs.iter().map(|r| r.job_seconds).collect());
        let peak_kib = runs.iter().map(|r| r.peak_kib).max().unwrap_or(0);
        let Some(ours) = runs.pop() else { continue };
        let ours = SegportRun { seconds, job_seconds, peak_kib, ..ours };
        let mut cells = Vec::new();
        let mut same = Vec::new();
        for form in [Duck::Parquet, Duck::Native] {
            if !forms.contains(&form) {
                cells.push("- | - | -".to_owned());
                continue;
            }
            let params = duckdb_params(&segments, &loaded);
            if warmup {
                run_duckdb(&dir, case, &params, form)?;
            }
            let mut runs = Vec::new();
            for _ in 0..args.repeat.max(1) {
                if args.cold {
                    drop_page_cache()?;
                }
                runs.push(run_duckdb(&dir, case, &params, form)?);
            }
            let seconds = median(runs.iter().map(|r| r.seconds).collect());
            let peak_kib = runs.iter().map(|r| r.peak_kib).max().unwrap_or(0);
            let Some(theirs) = runs.pop() else { continue };
            let agree = ours.digests == theirs.digests;
            if !agree {
                mismatches.push(format!("{} ({form:?})", case.name));
                same.push(format!(
                    "NO ({form:?}): segport {:?} vs DuckDB {:?}",
                    ours.digests.iter().map(|d| d.rows).collect::<Vec<_>>(),
                    theirs.digests.iter().map(|d| d.rows).collect::<Vec<_>>()
                ));
            }
            cells.push(format!(
                "{seconds:.2} | {:.0} | {}",
                mib(peak_kib),
                if agree { format!("{:.1}×", seconds / ours.seconds) } else { "—".into() }
            ));
        }
        let same = if forms.is_empty() {
            "not compared".to_owned()
        } else if same.is_empty() {
            format!("yes ({:016x})", ours.digests.iter().fold(0u64, |a, d| a ^ d.hash))
        } else {
            same.join("; ")
        };
        println!(
            "| {} | {} | {:.1} | {:.3} | {:.3} | {:.0} | {:.0} | {} | {same} |",
            case.name.to_uppercase(),
            ours.rows,
            ours.bytes as f64 / 1_048_576.0,
            ours.seconds,
            ours.job_seconds,
            ours.rows as f64 / ours.seconds.max(1e-9),
            mib(ours.peak_kib),
            cells.join(" | "),
        );
    }
    drop(client);
    server.stop()?;
    anyhow::ensure!(mismatches.is_empty(), "segport and DuckDB disagree on {mismatches:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_epoch_milliseconds() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_748_736_000_000), "2025-06-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }
}
