//! `segport generate`: deterministic synthetic data (docs/data.md).

use std::time::Instant;

use anyhow::Context;

use crate::cli::GenerateArgs;

pub async fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let out = args.out.clone();
    let summary = tokio::task::spawn_blocking(move || {
        segport_datagen::write(&args.out, args.profiles, args.seed)
    })
    .await
    .context("the generator thread failed")?
    .with_context(|| format!("cannot write synthetic data to {}", out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} profiles ({} of them events only, {} updated by a second fragment), {} events, {:.1} MiB to {} in {:.1} s ({:.0} profiles/s)",
        summary.profiles + summary.empty_profiles,
        summary.empty_profiles,
        summary.updates,
        summary.events,
        summary.bytes as f64 / 1_048_576.0,
        out.display(),
        secs,
        (summary.profiles + summary.empty_profiles) as f64 / secs.max(1e-9)
    );
    Ok(())
}
