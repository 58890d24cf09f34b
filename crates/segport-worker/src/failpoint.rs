//! Failure injection on the crash paths (DESIGN §9): a named point where a worker dies, so tests
//! can prove that nothing partial becomes visible and the task is retried.
//!
//! Set with `SEGPORT_FAILPOINTS=name[,name…]`. Known points:
//! - `ingest-after-files`: the ingest has written its files but not committed them.

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

    /// Kills the process at `name` when it is armed: no unwinding, no cleanup, no release of
    /// leases, exactly like a crash.
    pub fn hit(&self, name: &str) {
        if self.is_armed(name) {
            eprintln!("failpoint {name} hit: aborting the process");
            std::process::abort();
        }
    }
}
