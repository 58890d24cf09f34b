//! Failure injection on the crash paths (docs/store.md): a named point where a worker dies, so
//! tests can prove that nothing partial becomes visible and the task is retried.
//!
//! Set with `SEGPORT_FAILPOINTS=name[,name…]`, in a build with the `failpoints` feature (the
//! test command's); any other build refuses them, so a production process never dies on
//! purpose and a test without them fails instead of silently testing nothing. Known points:
//! - `ingest-after-files`: the ingest has written its files but not committed them.
//! - `export-after-files`: the export has written its batch files but not committed them.
//! - `export-pause`: the export waits (up to a minute) before writing its files, until it is
//!   stopped: lets tests cancel a running export.

use std::collections::HashSet;

/// The failure points armed in this process.
#[derive(Debug, Clone, Default)]
pub struct Failpoints(HashSet<String>);

impl Failpoints {
    /// Parses `SEGPORT_FAILPOINTS`' value; an error naming the feature when points are asked
    /// for in a build without it.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let points: HashSet<String> =
            spec.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if !points.is_empty() && !cfg!(feature = "failpoints") {
            return Err(format!(
                "SEGPORT_FAILPOINTS is set ({spec:?}) but this build has no failure points; \
                 they are for crash tests, built with the `failpoints` feature"
            ));
        }
        Ok(Self(points))
    }

    pub fn is_armed(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Waits at `name` when it is armed, until `stop` fires or a minute passes.
    pub async fn pause(&self, name: &str, stop: &tokio_util::sync::CancellationToken) {
        if self.is_armed(name) {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            }
        }
    }

    /// Kills the process at `name` when it is armed, with SIGKILL (falling back to an abort):
    /// no unwinding, no cleanup, no release of leases, exactly like a crash.
    pub fn hit(&self, name: &str) {
        if self.is_armed(name) {
            eprintln!("failpoint {name} hit: killing the process");
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test command's build arms failure points.
    #[cfg(feature = "failpoints")]
    #[test]
    fn a_build_with_the_feature_arms_them() {
        let points = Failpoints::parse("export-pause, ingest-after-files").unwrap();
        assert!(points.is_armed("export-pause") && points.is_armed("ingest-after-files"));
    }

    /// Any other build refuses them (and `segport serve` does not start).
    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_build_without_the_feature_refuses_them() {
        let e = Failpoints::parse("export-pause").unwrap_err();
        assert!(e.contains("failpoints") && e.contains("export-pause"), "{e}");
    }

    #[test]
    fn nothing_asked_is_nothing_armed() {
        assert!(!Failpoints::parse(" , ").unwrap().is_armed("export-pause"));
    }
}
