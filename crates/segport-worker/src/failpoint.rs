//! Failure injection on the crash paths (DESIGN §9): a named point where a worker dies, so tests
//! can prove that nothing partial becomes visible and the task is retried.
//!
//! Set with `SEGPORT_FAILPOINTS=name[,name…]`. Known points:
//! - `ingest-after-files`: the ingest has written its files but not committed them.
//! - `export-after-files`: the export has written its batch files but not committed them.
//! - `export-pause`: the export waits (up to a minute) before writing its files, until it is
//!   stopped: lets tests cancel a running export.

use std::collections::HashSet;

/// The failure points armed in this process.
#[derive(Debug, Clone, Default)]
pub struct Failpoints(HashSet<String>);

impl Failpoints {
    /// Parses `SEGPORT_FAILPOINTS`' value.
    pub fn parse(spec: &str) -> Self {
        Self(spec.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
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
