//! The real binary under test: a temporary directory, `segport` commands, and a running
//! `segport serve` spoken to over raw HTTP/1.1.

#![allow(dead_code)] // each test file uses its own part
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_segport");
pub const ORG: &str = "AcmeOrg@AdobeOrg";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("segport-cli-{}", segport_model::ids::new_uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn segport(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args).env_remove("DATABASE_URL").env_remove("SEGPORT_AUTH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    segport(dir, args, env).output().expect("run segport")
}

/// A running `segport serve`, killed on drop if still running.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The metrics address, when started with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    pub logs: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut full = vec!["--log-format", "json", "serve", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        let (tx, rx) = mpsc::channel();
        // The guard kills the process on drop, so a failed start leaves nothing behind.
        let mut server = Server {
            child: segport(dir, &full, env)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn segport serve"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            logs: rx,
        };
        let stderr = server.child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = server
                .logs
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("segport serve did not report its address"));
            let log: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            assert!(log["level"].is_string() && log["timestamp"].is_string(), "{line}");
            if log["message"] == "serving per-tenant metrics" {
                server.metrics_addr = log["metrics_listen"].as_str().and_then(|a| a.parse().ok());
            }
            if log["message"] == "segport serving" {
                server.addr = log["listen"].as_str().unwrap().parse().unwrap();
                return server;
            }
        }
    }

    /// One HTTP/1.1 GET answering the status, the head and the raw body bytes.
    pub fn download(&self, path: &str, extra: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (k, v) in TENANT_HEADERS.iter().chain(extra) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head, raw[split + 4..].to_vec())
    }

    /// One HTTP/1.1 exchange with a raw body.
    pub fn http_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(req.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, payload) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, serde_json::from_str(payload).unwrap_or(Value::String(payload.to_owned())))
    }

    /// One HTTP/1.1 exchange; answers status and JSON body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, payload) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let value = if head.to_ascii_lowercase().contains("content-type: application/json") {
            serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload}"))
        } else {
            Value::String(payload.to_owned())
        };
        (status, value)
    }

    pub fn tenant_call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        org: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.http(
            method,
            path,
            &[
                ("Authorization", &auth),
                ("x-api-key", "k"),
                ("x-gw-ims-org-id", org),
                ("x-sandbox-name", "prod"),
            ],
            body,
        )
    }

    /// Sends SIGTERM and waits for the exit; the shutdown must be logged.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status =
            Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread forwards the last lines after the exit: read until it ends
                // (the channel disconnects when the pipe closes).
                let mut logs: Vec<String> = Vec::new();
                while let Ok(line) = self.logs.recv_timeout(Duration::from_secs(5)) {
                    logs.push(line);
                }
                assert!(logs.iter().any(|l| l.contains("segport stopped")), "{logs:?}");
                return status;
            }
            assert!(Instant::now() < deadline, "segport did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const TENANT_HEADERS: [(&str, &str); 4] = [
    ("Authorization", "Bearer t"),
    ("x-api-key", "k"),
    ("x-gw-ims-org-id", ORG),
    ("x-sandbox-name", "prod"),
];

/// Waits until `f` answers `Some`, or fails after `secs`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One GET on `addr`; answers the body of a 200 (and fails on any other status).
pub fn get_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The head of an HTTP/1.1 request with the tenant headers, `extra` lines (`Name: value`,
/// each ending in CRLF) and the blank line; a body, if any, follows it.
pub fn tenant_head(method: &str, path: &str, extra: &str) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}");
    for (k, v) in TENANT_HEADERS {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}
