//! `rewrite-row-files`: rewrites the row files of a local storage root with the current
//! [`RowFileWriter`], batch for batch, so that a 10M benchmark store loaded by an older build
//! (which takes over an hour to set up again) gets what the current format adds (the footer's
//! directory of batches) and builds can be compared on the same files. Run it with no
//! `segport serve` on the root.

use std::path::{Path, PathBuf};

use anyhow::Context;
use segport_store::rowfile::RowFileWriter;

#[derive(clap::Args, Debug)]
pub struct RewriteArgs {
    /// The storage root (e.g. the harness's `n10000000-s1/segport/store`).
    root: PathBuf,
}

pub fn run(args: &RewriteArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    find(&args.root, &mut files)?;
    let started = std::time::Instant::now();
    let (mut rows, mut batches) = (0, 0);
    for path in &files {
        let (r, b) = rewrite(path).with_context(|| format!("rewriting {}", path.display()))?;
        rows += r;
        batches += b;
    }
    eprintln!(
        "rewrote {} row files under {} ({rows} rows, in {batches} batches before) in {:.1} s",
        files.len(),
        args.root.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The row files under `dir`.
fn find(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            find(&path, files)?;
        } else if path.to_string_lossy().ends_with(".rows.arrow") {
            files.push(path);
        }
    }
    Ok(())
}

/// Rewrites the row file at `path`; answers its rows and how many batches it had.
fn rewrite(path: &Path) -> anyhow::Result<(usize, usize)> {
    let reader = arrow::ipc::reader::FileReader::try_new(std::fs::File::open(path)?, None)?;
    let batches = reader.num_batches();
    let mut writer = RowFileWriter::create(path, &reader.schema())?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows();
        writer.write(&batch)?;
    }
    // Renamed over the old file: a reader still holding it keeps the old bytes.
    writer.finish()?;
    Ok((rows, batches))
}
