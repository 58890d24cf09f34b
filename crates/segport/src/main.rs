//! `segport`: the one binary. `serve` runs the API and/or the worker, `migrate` applies the
//! catalog migrations, `token` manages API tokens, `generate` writes synthetic data and `ingest`
//! loads files into a dataset. All subcommands share one configuration
//! loader ([`config`]), one telemetry setup ([`telemetry`]) and one shutdown signal.

mod cli;
mod config;
mod generate;
mod ingest;
mod serve;
mod settings;
mod telemetry;
mod token;
mod upload;

use std::process::ExitCode;

/// mimalloc rather than the system allocator: ingest and export allocate many small values on
/// several threads at once, where glibc's malloc spends a third of the time in its own locks
/// and consolidation (measured with perf on a 300k-profile ingest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match settings::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        // Help, version and usage errors print and exit as clap does.
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let log_format = cli.log_format;
    telemetry::init(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Text logs go to the same terminal as this message; only JSON logs (read by
            // machines) need the failure as a log record too.
            if log_format == cli::LogFormat::Json {
                tracing::error!(error = format!("{e:#}"), "segport failed");
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => {
            let catalog = config::open_catalog(&args, config::TOOL_CONNECTIONS).await?;
            tracing::info!(backend = catalog.backend().as_str(), "migrations applied");
            Ok(())
        }
        Command::Token(cmd) => token::run(cmd).await,
        Command::Generate(args) => generate::run(args).await,
        Command::Ingest(args) => ingest::run(args).await,
    }
}
