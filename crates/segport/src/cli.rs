//! The command line: every flag has an environment variable, so containers configure segport
//! through the environment and developers through flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "segport",
    version,
    about = "A self-hosted export job engine, wire-compatible with AEP's /export/jobs"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "SEGPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and/or the worker.
    Serve(Box<ServeArgs>),
    /// Apply the catalog migrations and exit (serve also applies them at start).
    Migrate(CatalogArgs),
    /// Manage API tokens for token auth mode.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write deterministic synthetic profiles, events and segments (NDJSON).
    Generate(GenerateArgs),
    /// Load files into a dataset as one batch: through a running server's Batch Ingestion API
    /// (--server), or directly into an existing catalog and storage root.
    Ingest(IngestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Number of profiles (about 3% of them have events only).
    #[arg(long)]
    pub profiles: u64,
    /// Seed; the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory: profiles.ndjson, events.ndjson, updates.ndjson (a second profile
    /// dataset updating about 10% of the profiles) and segments.json.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Load through this server's Batch Ingestion API (e.g. https://segport.example.com),
    /// streamed; no database or storage access needed. Unset: open the catalog and storage root
    /// below directly (they must exist: run where `segport serve` keeps its data).
    #[arg(long, env = "SEGPORT_SERVER")]
    pub server: Option<String>,
    /// API token for --server. A dev-mode server takes any token.
    #[arg(long, env = "SEGPORT_TOKEN", hide_env_values = true, requires = "server")]
    pub token: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// The IMS org of the dataset. With --server and a token-mode server, the token's org by
    /// default.
    #[arg(long)]
    pub org: Option<String>,
    /// The sandbox of the dataset.
    #[arg(long)]
    pub sandbox: String,
    /// The dataset id (24 hex characters) to load into.
    #[arg(long)]
    pub dataset: String,
    /// Input format; by default taken from the file extension (.parquet, else json).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Each JSON file is one array of records rather than one record per line.
    #[arg(long)]
    pub multiline_json: bool,
    /// No progress bar (for logs and scripts).
    #[arg(long)]
    pub quiet: bool,
    /// Hard-link each file into a local storage root instead of copying it (same filesystem
    /// only; falls back to a copy). The batch then shares the input's bytes: the input must not
    /// be changed afterwards. Not with --server.
    #[arg(long, conflicts_with = "server")]
    pub link: bool,
    /// Files to load.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Json,
    Parquet,
}

/// Where the catalog and the files live.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// PostgreSQL (postgres://…, TLS by sslmode and sslrootcert in its query) or SQLite
    /// (sqlite://…) catalog. Unset: the embedded SQLite catalog at DATA_DIR/segport.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of the embedded catalog and, unless --storage-url says otherwise, of the files.
    #[arg(long, env = "SEGPORT_DATA_DIR", default_value = "./segport-data")]
    pub data_dir: PathBuf,

    /// Where profile-store and batch files live (file://…). Default: DATA_DIR.
    #[arg(long, env = "SEGPORT_STORAGE_URL")]
    pub storage_url: Option<String>,

    /// Most catalog connections this process opens. Default by role: api 16, worker its slots
    /// + 4, all both; other commands 4.
    #[arg(long, env = "SEGPORT_DB_CONNECTIONS")]
    pub db_connections: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The HTTP API only.
    Api,
    /// The worker only (serves /healthz, /readyz and /metrics).
    Worker,
    /// Both, in one process.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// Any non-empty bearer token; only allowed on a loopback address.
    Dev,
    /// Tokens from `segport token create`.
    Token,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file of settings: the long names of these flags as keys (`worker-slots = 4`,
    /// `lease = "1m"`). Flags and environment variables override it; unknown keys are refused.
    #[arg(long, env = "SEGPORT_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Which parts of segport this process runs.
    #[arg(long, env = "SEGPORT_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// Address to listen on.
    #[arg(long, env = "SEGPORT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Auth mode. Default: dev on a loopback address; any other address requires token.
    #[arg(long, env = "SEGPORT_AUTH", value_enum)]
    pub auth: Option<AuthArg>,

    /// Tasks a worker runs at once.
    #[arg(long, env = "SEGPORT_WORKER_SLOTS", default_value_t = 2)]
    pub worker_slots: usize,

    /// How long SIGTERM waits for in-flight work before exiting (running tasks are then handed
    /// back to the queue).
    #[arg(long, env = "SEGPORT_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub shutdown_grace: Duration,

    /// Where a process keeps its local cache of store files read from an `s3://` storage root
    /// (the Parquet files an export reads and the row files and indexes built from them).
    /// Derived data: safe to delete while the process is stopped. Default: DATA_DIR/cache.
    /// Unused with a local storage root.
    #[arg(long, env = "SEGPORT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Most bytes the local cache keeps (e.g. 20GiB, 512MiB, or bytes); least recently used
    /// entries are evicted beyond it, never while a running task reads them.
    #[arg(long, env = "SEGPORT_CACHE_SIZE", value_parser = parse_size, default_value = "10GiB")]
    pub cache_size: u64,

    /// Largest file the Batch Ingestion upload accepts, in bytes.
    #[arg(long, env = "SEGPORT_MAX_UPLOAD_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub worker: WorkerArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// The scheduler and the webhook dispatcher, which every api process runs.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// The longest the scheduler sleeps: it wakes at the earliest due time it knows of, and at
    /// least this often to see schedules created or changed in other processes.
    #[arg(long, env = "SEGPORT_SCHEDULER_TICK", value_parser = humantime::parse_duration, default_value = "1s")]
    pub scheduler_tick: Duration,

    /// A network webhook deliveries may call although it is not public (CIDR such as
    /// 10.0.0.0/8, or one address); repeat it, or separate them with commas. By default
    /// loopback, private, link-local and other non-public addresses are refused.
    #[arg(long, env = "SEGPORT_WEBHOOK_ALLOW_NETWORK", value_delimiter = ',')]
    pub webhook_allow_network: Vec<String>,

    /// How long one webhook request may take, connection included.
    #[arg(long, env = "SEGPORT_WEBHOOK_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub webhook_timeout: Duration,

    /// The wait before a failed webhook delivery is tried again; each later wait doubles (with
    /// jitter), up to an hour.
    #[arg(long, env = "SEGPORT_WEBHOOK_RETRY_FIRST", value_parser = humantime::parse_duration, default_value = "5s")]
    pub webhook_retry_first: Duration,

    /// A webhook delivery not made within this time of its event is given up, and its
    /// endpoint disabled when nothing was delivered to it meanwhile.
    #[arg(long, env = "SEGPORT_WEBHOOK_RETRY_WINDOW", value_parser = humantime::parse_duration, default_value = "24h")]
    pub webhook_retry_window: Duration,
}

/// Connection and request limits of the HTTP server.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// A request's headers must arrive within this; also closes keep-alive connections idle
    /// between requests.
    #[arg(long, env = "SEGPORT_HEADER_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_timeout: Duration,

    /// A connection whose answer makes no progress for this long (a client that stopped
    /// reading) is closed.
    #[arg(long, env = "SEGPORT_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,

    /// A request body (an upload, say) that sends nothing for this long is dropped (408).
    #[arg(long, env = "SEGPORT_BODY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub body_timeout: Duration,

    /// An address for a second `/metrics` with per-tenant series (export jobs by org, sandbox
    /// and status), for operators only. Off by default; the API port's `/metrics` never shows
    /// tenants' figures.
    #[arg(long, env = "SEGPORT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// The URL clients reach the API at (e.g. https://segport.example.com), for the absolute
    /// links AEP answers with. Unset: taken from each request's X-Forwarded-Proto and
    /// X-Forwarded-Host, or its Host.
    #[arg(long, env = "SEGPORT_PUBLIC_URL", value_parser = segport_api::parse_public_url)]
    pub public_url: Option<String>,

    /// Requests served at once; beyond it every route but /healthz and /readyz answers 503.
    #[arg(long, env = "SEGPORT_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Engine reads (profile look-ups, previews) run at once in the api process; up to 16 per
    /// slot wait, beyond them they answer 503 (default: twice the cores).
    #[arg(long, env = "SEGPORT_LOOKUP_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub lookup_concurrency: Option<u16>,

    /// How long a look-up or preview may take, its wait included, before it answers 504.
    #[arg(long, env = "SEGPORT_LOOKUP_DEADLINE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub lookup_deadline: Duration,
}

/// Lease and maintenance timings of the worker role.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// How long a claimed task's lease lasts without a heartbeat.
    #[arg(long, env = "SEGPORT_LEASE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub lease: Duration,

    /// How often a running task's lease is extended.
    #[arg(long, env = "SEGPORT_HEARTBEAT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub heartbeat: Duration,

    /// How often an idle worker looks for tasks when no notification arrives.
    #[arg(long, env = "SEGPORT_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub poll_interval: Duration,

    /// How often expired leases are returned to the queue.
    #[arg(long, env = "SEGPORT_REAP_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub reap_interval: Duration,

    /// How often the store is swept and compacted.
    #[arg(long, env = "SEGPORT_MAINTENANCE_INTERVAL", value_parser = humantime::parse_duration, default_value = "60s")]
    pub maintenance_interval: Duration,

    /// How long removed or unreferenced store files are kept before deletion.
    #[arg(long, env = "SEGPORT_FILE_GRACE", value_parser = humantime::parse_duration, default_value = "5m")]
    pub file_grace: Duration,

    /// Finished export batches older than this (such as 30d) are deleted with their files.
    /// Default: kept forever.
    #[arg(long, env = "SEGPORT_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,

    /// Most tasks of one tenant (org and sandbox) running at once across all workers, so that
    /// one tenant's backlog leaves workers to the others. Default: no cap (tenants still take
    /// turns for each claim).
    #[arg(long, env = "SEGPORT_TENANT_MAX_RUNNING", value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_running: Option<u32>,

    /// Profiles per work unit of an export job: a larger job is split into units (by partition
    /// and profile-key range) that any worker may claim, so that many workers share one export.
    #[arg(long, env = "SEGPORT_EXPORT_UNIT_PROFILES", default_value_t = segport_worker::DEFAULT_EXPORT_UNIT_PROFILES, value_parser = clap::value_parser!(u64).range(1..))]
    pub export_unit_profiles: u64,

    /// How long a queued export unit whose partition another live worker holds in its cache is
    /// left to that worker before an idle one takes it and fetches its files (0s: never).
    #[arg(long, env = "SEGPORT_LOCALITY_WAIT", value_parser = humantime::parse_duration, default_value = "1s")]
    pub locality_wait: Duration,

    /// Levels of objects and arrays a record may nest (at most 32, the store's own limit).
    #[arg(long, env = "SEGPORT_MAX_RECORD_DEPTH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub max_record_depth: u16,

    /// Distinct fields one record may have.
    #[arg(long, env = "SEGPORT_MAX_RECORD_FIELDS", default_value_t = 10_000)]
    pub max_record_fields: usize,

    /// Distinct fields a sandbox's profile (or event) schema may grow to.
    #[arg(long, env = "SEGPORT_MAX_SCHEMA_FIELDS", default_value_t = 20_000)]
    pub max_schema_fields: usize,

    /// Bytes one record may take: its JSON text, or its values decoded from Parquet.
    #[arg(long, env = "SEGPORT_MAX_RECORD_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_record_bytes: usize,

    /// Failure points to arm, for crash tests (e.g. ingest-after-files).
    #[arg(long, env = "SEGPORT_FAILPOINTS", hide = true, default_value = "")]
    pub failpoints: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token bound to an org; the secret is printed once and stored only hashed.
    Create {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// The IMS org the token may act for.
        #[arg(long)]
        org: String,
        /// Lifetime such as 30d or 12h. Default: no expiry.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List tokens (ids, orgs, dates; never secrets).
    List {
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// The token id (tok_…), as `token list` shows it.
        id: String,
    },
}

/// A size in bytes: a number, or a number with a binary unit (KiB, MiB, GiB, TiB).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a size such as 10GiB or 512MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB, GiB or TiB")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("3 MiB"), Ok(3 << 20));
        for bad in ["", "GiB", "10GB", "-1", "1.5GiB", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
