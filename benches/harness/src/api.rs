//! `segport-bench api`: the export-job API under load, against PostgreSQL in token mode, and
//! the latency from creating a job to a worker picking it up.
//!
//! Each simulated client owns one kept-alive connection and sends its next request when the
//! previous answer arrived (closed loop), so requests/s and latency describe the server at that
//! concurrency. Every phase is bounded in time and in requests; everything runs on loopback.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{Client, Tenant};
use crate::proc::{self, Server};

const ADDR_API: &str = "127.0.0.1:18573";
const ADDR_ALL: &str = "127.0.0.1:18574";

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// PostgreSQL server; the database `segport_bench` on it is dropped and made afresh.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Length of each measured phase.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Most requests one phase sends.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// Concurrent clients to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Operations to load (gets read the jobs the creates made, or the first page of jobs).
    #[arg(long, value_delimiter = ',', default_value = "create,get,list")]
    ops: Vec<String>,
    /// Jobs created one after the other (an idle worker picking each up) for pickup latency.
    #[arg(long, default_value_t = 200)]
    pickups: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .strip_suffix("ms")
        .map(|v| v.parse::<f64>().map(|x| x / 1000.0))
        .or_else(|| s.strip_suffix('s').map(str::parse))
        .unwrap_or_else(|| s.parse())
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(Duration::from_secs_f64(secs))
}

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-XAtq", "-c", sql])
        .output()
        .context("cannot run psql (PostgreSQL's client)")?;
    anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Latencies of one phase, in microseconds.
struct Phase {
    latencies: Vec<u32>,
    elapsed: Duration,
    errors: u64,
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Create,
    Get,
    List,
}

/// Runs `op` from `clients` connections for the phase's time or request budget.
async fn phase(
    op: Op,
    clients: usize,
    tenant: &Tenant,
    body: &Value,
    ids: &Arc<Vec<i64>>,
    args: &ApiArgs,
) -> anyhow::Result<Phase> {
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + args.duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = Client::connect(ADDR_API, tenant.clone()).await?;
        let (sent, errors, ids, body) = (sent.clone(), errors.clone(), ids.clone(), body.clone());
        let max = args.max_requests;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = c;
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                let answer = match op {
                    Op::Create => client.call(Method::POST, "/export/jobs", Some(&body)).await,
                    Op::Get => {
                        n = (n * 7919 + 13) % ids.len().max(1);
                        let id = ids.get(n).copied().unwrap_or(1);
                        client.call(Method::GET, &format!("/export/jobs/{id}"), None).await
                    }
                    Op::List => client.call(Method::GET, "/export/jobs?limit=50", None).await,
                };
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                match answer {
                    Ok((status, _)) if status.is_success() => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Phase { latencies, elapsed, errors: errors.load(Ordering::Relaxed) })
}

async fn destination(client: &mut Client) -> anyhow::Result<String> {
    crate::export::create_dataset(
        client,
        "bench-out",
        "https://ns.adobe.com/xdm/context/profile__union",
    )
    .await
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let binary = proc::segport_binary()?;
    let admin = format!("{}/postgres", args.postgres.trim_end_matches('/'));
    psql(&admin, "DROP DATABASE IF EXISTS segport_bench WITH (FORCE)")?;
    psql(&admin, "CREATE DATABASE segport_bench")?;
    let url = format!("{}/segport_bench", args.postgres.trim_end_matches('/'));
    let durability = format!(
        "fsync={}, synchronous_commit={}",
        psql(&url, "SHOW fsync")?,
        psql(&url, "SHOW synchronous_commit")?
    );
    let work = std::env::temp_dir().join(format!("segport-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let data = work.to_string_lossy().into_owned();
    let org = "bench-api".to_owned();
    let migrate = Command::new(&binary).args(["migrate", "--database-url", &url]).status()?;
    anyhow::ensure!(migrate.success(), "segport migrate failed");
    let token = Command::new(&binary)
        .args(["token", "create", "--database-url", &url, "--org", &org])
        .output()?;
    anyhow::ensure!(token.status.success(), "segport token create failed");
    let secret = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let tenant = Tenant { token: secret, org: org.clone(), sandbox: "prod".into() };

    let common = ["--database-url", url.as_str(), "--data-dir", data.as_str(), "--auth", "token"];
    println!(
        "segport-bench api: PostgreSQL {} ({durability}), token auth, {} s per phase, at most {} requests",
        args.postgres,
        args.duration.as_secs_f64(),
        args.max_requests
    );
    // Pickup first, while the queue is empty: the load below leaves thousands of queued jobs.
    if args.pickups > 0 {
        pickup(&binary, &common, &work, &tenant, &args).await?;
    }
    load(&binary, &common, &work, &tenant, &args).await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn job_body(dataset: &str) -> Value {
    json!({
        "destination": {"datasetId": dataset},
        "schema": {"name": "_xdm.context.profile"},
        "fields": "identities.id,personalEmail.address",
        "filter": {"segments": [{"segmentId": "00000000-0000-4000-a000-000000000000"}]},
    })
}

/// A server of `role` on `addr`, a client of it, and a valid job body for its sandbox.
async fn start(
    binary: &std::path::Path,
    addr: &str,
    role: &str,
    common: &[&str],
    work: &std::path::Path,
    tenant: &Tenant,
) -> anyhow::Result<(Server, Client, Value)> {
    let args: Vec<&str> = common.iter().copied().chain(["--role", role]).collect();
    let server = Server::start(binary, addr, &args, &[], &work.join(format!("{role}.log"))).await?;
    let mut client = Client::connect(addr, tenant.clone()).await?;
    let body = job_body(&destination(&mut client).await?);
    Ok((server, client, body))
}

/// Requests/s and latency of create, get and list at each concurrency (API role only).
async fn load(
    binary: &std::path::Path,
    common: &[&str],
    work: &std::path::Path,
    tenant: &Tenant,
    args: &ApiArgs,
) -> anyhow::Result<()> {
    let (server, mut client, body) = start(binary, ADDR_API, "api", common, work, tenant).await?;
    println!();
    println!(
        "| operation | clients | requests | errors | requests/s | p50 ms | p99 ms | server CPU | load generator CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // CPU shares are of the machine's cores over the phase: the load generator (this process)
    // runs on the same machine as the server and competes with it.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share = |before: Option<f64>, after: Option<f64>, elapsed: Duration| match (before, after) {
        (Some(b), Some(a)) => format!("{:.0}%", 100.0 * (a - b) / elapsed.as_secs_f64() / cores),
        _ => "-".to_owned(),
    };
    let mut ids = Arc::new(Vec::new());
    for op in [Op::Create, Op::Get, Op::List] {
        let name = format!("{op:?}").to_lowercase();
        if !args.ops.contains(&name) && matches!(op, Op::Create) {
            // Gets need jobs to read.
            for _ in 0..100 {
                client.json(Method::POST, "/export/jobs", Some(&body)).await?;
            }
        }
        for &clients in args.clients.iter().filter(|_| args.ops.contains(&name)) {
            let (server_before, own_before) =
                (proc::cpu_seconds(server.pid()), proc::cpu_seconds(std::process::id()));
            let result = phase(op, clients, tenant, &body, &ids, args).await?;
            let (server_after, own_after) =
                (proc::cpu_seconds(server.pid()), proc::cpu_seconds(std::process::id()));
            println!(
                "| {op:?} | {clients} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                result.latencies.len(),
                result.errors,
                result.latencies.len() as f64 / result.elapsed.as_secs_f64(),
                result.percentile(0.50),
                result.percentile(0.99),
                share(server_before, server_after, result.elapsed),
                share(own_before, own_after, result.elapsed),
            );
        }
        if matches!(op, Op::Create) {
            // Ids of the jobs just created, for the gets.
            let list = client.json(Method::GET, "/export/jobs?limit=1000", None).await?;
            ids = Arc::new(
                list["records"]
                    .as_array()
                    .map(|r| r.iter().filter_map(|j| j["id"].as_i64()).collect())
                    .unwrap_or_default(),
            );
        }
    }
    drop(client);
    server.stop()?;

    Ok(())
}

/// Creation → worker start of jobs created one after the other, with an idle worker.
async fn pickup(
    binary: &std::path::Path,
    common: &[&str],
    work: &std::path::Path,
    tenant: &Tenant,
    args: &ApiArgs,
) -> anyhow::Result<()> {
    let (server, mut client, body) = start(binary, ADDR_ALL, "all", common, work, tenant).await?;
    let mut pickups = Vec::new();
    for _ in 0..args.pickups {
        let job = client.json(Method::POST, "/export/jobs", Some(&body)).await?;
        let id = job["id"].as_i64().context("job without id")?;
        let created = job["creationTime"].as_i64().context("job without creationTime")?;
        let done = loop {
            let job = client.json(Method::GET, &format!("/export/jobs/{id}"), None).await?;
            if matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let started = done["metrics"]["profileExportTime"]["startTimeInMs"]
            .as_i64()
            .context("finished job without a start time")?;
        pickups.push(started - created);
    }
    pickups.sort_unstable();
    let pct = |p: f64| pickups[((pickups.len() - 1) as f64 * p).round() as usize];
    println!();
    println!(
        "pickup (creation → worker start, idle worker, {} jobs): p50 {} ms, p99 {} ms, max {} ms",
        pickups.len(),
        pct(0.5),
        pct(0.99),
        pickups.last().copied().unwrap_or(0)
    );
    drop(client);
    server.stop()?;
    Ok(())
}
