//! The processes a benchmark runs: the segport binary (built in release first), its peak
//! resident memory, and a server that is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Builds segport in release (the profile this harness runs in) and returns its path; or the
/// binary named by `SEGPORT_BIN`, as it is (to compare two builds on the same data).
pub fn segport_binary() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os("SEGPORT_BIN") {
        let binary = PathBuf::from(binary);
        anyhow::ensure!(binary.exists(), "SEGPORT_BIN: no file {}", binary.display());
        return Ok(binary);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "-p", "segport", "--bin", "segport"])
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    anyhow::ensure!(status.success(), "building segport failed");
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the harness has no directory")?;
    let binary = dir.join("segport");
    anyhow::ensure!(binary.exists(), "no segport binary beside {}", exe.display());
    Ok(binary)
}

/// A process's peak resident set in KiB (`VmHWM`), while it runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets a process's peak resident set to its current one, so the next reading is the peak
/// of what follows.
pub fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("cannot reset the peak RSS of process {pid}"))
}

/// Runs `command` to completion, sampling its peak RSS; returns wall seconds and peak KiB.
pub fn run_measured(command: &mut Command) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let mut child = command.spawn().with_context(|| format!("cannot start {command:?}"))?;
    let mut peak = 0;
    loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "{command:?} failed: {status}");
            return Ok((start.elapsed().as_secs_f64(), peak));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `segport serve`, killed on drop.
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts `binary serve` on `addr` with `args`, logging to `log`, and waits for /healthz.
    pub async fn start(
        binary: &Path,
        addr: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .arg("serve")
            .args(["--listen", addr, "--log-format", "json"])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let request =
                    format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
                if stream.write_all(request.as_bytes()).await.is_ok() {
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer).await;
                    if answer.starts_with(b"HTTP/1.1 200") {
                        return Ok(server);
                    }
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "segport did not become healthy on {addr}; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGTERM semantics via `kill`, then waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Free bytes on the file system holding `dir` (by `df`, which every Linux has).
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df").args(["-k", "--output=avail"]).arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("cannot read df's answer")?;
    Ok(kib * 1024)
}

/// Writes dirty pages back and drops the page cache, so that the next run reads its files from
/// disk (Linux, as root).
pub fn drop_page_cache() -> anyhow::Result<()> {
    let synced = Command::new("sync").status()?.success();
    anyhow::ensure!(synced, "sync failed");
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache needs root (/proc/sys/vm/drop_caches)")
}

/// CPU time (user + system) a process has used so far, in seconds, from `/proc/{pid}/stat`
/// (Linux; counted in clock ticks of 1/100 s, the kernel's `USER_HZ` on every common build).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
