//! `segport-bench`: segport's benchmarks, run on demand (never by the test suite).
//!
//! - `export`: Q1–Q5 as export jobs through the API, side by side with DuckDB on the same data;
//! - `api`: the job API under load from 1, 16 and 64 clients, and job pickup latency;
//! - `rewrite-row-files`: brings the row files of a benchmark store set up by an older build up
//!   to the current format, without loading the data again.

mod api;
mod canon;
mod client;
mod export;
mod proc;
mod rewrite;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "segport's benchmarks")]
enum Cli {
    /// Export cases Q1–Q5 against DuckDB on the same generated data.
    Export(export::ExportArgs),
    /// The job API under load (1, 16, 64 clients) on PostgreSQL, and job pickup latency.
    Api(api::ApiArgs),
    /// Rewrites every row file under a storage root in the current format (same batches).
    RewriteRowFiles(rewrite::RewriteArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Export(args) => export::run(args).await,
        Cli::Api(args) => api::run(args).await,
        Cli::RewriteRowFiles(args) => rewrite::run(&args),
    }
}
