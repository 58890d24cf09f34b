//! Hostile clients against the real binary (docs/limits.md): idle and half-open connections, slow
//! headers, stalled bodies, readers that stop reading, and more requests than the server takes
//! at once. The probes must keep answering; nothing may pile up.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Raises this process's open-file limit to its hard limit (the server it spawns inherits
/// it): thousands of sockets need more than the common default of 1,024.
fn raise_fd_limit(wanted: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(wanted.max(soft)), hard).unwrap();
    }
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

/// One GET /healthz on a fresh connection; its round trip.
fn healthz(server: &Server) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    started.elapsed()
}

/// Reads until the peer closes; answers how long that took.
fn closed_within(mut stream: TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("the server kept the connection open for {limit:?}: {e}"),
        }
    }
}

/// A profile dataset and a loading batch of it: `(dataset, batch)`.
fn loading_batch(server: &Server) -> (String, String) {
    let (status, body) = server.http(
        "POST",
        "/data/foundation/catalog/dataSets",
        &TENANT_HEADERS,
        Some(&serde_json::json!({"name": "in", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile"}})),
    );
    assert_eq!(status, 201, "{body}");
    let dataset = body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    let (status, batch) = server.http(
        "POST",
        "/data/foundation/import/batches",
        &TENANT_HEADERS,
        Some(&serde_json::json!({"datasetId": dataset, "inputFormat": {"format": "json"}})),
    );
    assert_eq!(status, 201, "{batch}");
    (dataset, batch["id"].as_str().unwrap().to_owned())
}

/// Uploads `bytes` as file `name` of the batch.
fn upload(server: &Server, (dataset, batch): (&str, &str), name: &str, bytes: &[u8]) {
    let path = format!("/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{name}");
    let (status, answer) = server.http_bytes("PUT", &path, &TENANT_HEADERS, bytes);
    assert_eq!(status, 200, "{answer}");
}

/// Issue 7, point 3: 5,000 idle connections do not keep `/healthz` from answering within a
/// second, and the server closes them on its header timeout.
#[test]
fn idle_connections_do_not_starve_the_probes() {
    let limit = raise_fd_limit(12_000);
    assert!(limit >= 11_000, "the test needs 11,000 open files, the hard limit allows {limit}");
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &["--header-timeout", "3s"], &[]);
    let idle: Vec<TcpStream> =
        (0..5000).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // Half of them start a request and never finish its headers.
    for s in idle.iter().step_by(2) {
        (&*s).write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    for _ in 0..5 {
        let took = healthz(&server);
        assert!(
            took < Duration::from_secs(1),
            "/healthz took {took:?} beside 5,000 idle connections"
        );
    }
    // The header timeout closes every one of them.
    let started = Instant::now();
    for s in idle {
        closed_within(s, Duration::from_secs(15));
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(healthz(&server) < Duration::from_secs(1));
}

/// Issue 7, point 3: an upload that stops sending is dropped with 408 after the body timeout;
/// a client that stops reading its answer is disconnected after the idle timeout.
#[test]
fn stalled_bodies_and_readers_are_cut_off() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &["--body-timeout", "1s", "--idle-timeout", "2s"], &[]);
    let (dataset, batch) = loading_batch(&server);

    // Half a body, then silence.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let mut head = tenant_head(
        "PUT",
        &format!("/data/foundation/import/batches/{batch}/datasets/{dataset}/files/f.json"),
        "Content-Length: 1000\r\n",
    );
    head.push_str("{\"identityMap\": ");
    stream.write_all(head.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A reader that asks for a large answer and reads none of it: it fills the socket
    // buffers, then the idle timeout closes the connection.
    upload(&server, (&dataset, &batch), "big.json", &vec![b' '; 32 * 1024 * 1024]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let request =
        tenant_head("GET", &format!("/data/foundation/export/files/{batch}?path=big.json"), "");
    stream.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // By now the server gave up: what it sent ends short of the file.
    let mut received = Vec::new();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.read_to_end(&mut received);
    assert!(received.len() < 32 * 1024 * 1024, "the whole answer arrived: {}", received.len());
    assert!(healthz(&server) < Duration::from_secs(1));
}

/// Issue 7, point 3: past the in-flight cap every route answers 503 at once, except the probes.
#[test]
fn past_the_in_flight_cap_only_the_probes_answer() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &["--max-in-flight", "2", "--body-timeout", "10s"], &[]);
    // Two uploads hold the two permits, sending their bodies slowly.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            let mut head = tenant_head(
                "POST",
                "/data/foundation/catalog/dataSets",
                "Content-Type: application/json
Content-Length: 100
",
            );
            head.push('{');
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) =
        server.http("GET", "/data/foundation/catalog/dataSets", &TENANT_HEADERS, None);
    assert_eq!(status, 503, "{body}");
    assert!(body["title"].as_str().unwrap().contains("busy"), "{body}");
    assert!(healthz(&server) < Duration::from_secs(1));
    let (status, _) = server.http("GET", "/readyz", &[], None);
    assert_eq!(status, 200);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) =
        server.http("GET", "/data/foundation/catalog/dataSets", &TENANT_HEADERS, None);
    assert_eq!(status, 200);
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Issue 7, point 4: downloads stream from storage: four at once of a 200 MiB file add well
/// under 64 MiB to the server's resident memory (they used to hold the whole file each).
#[test]
fn downloads_stream_in_bounded_memory() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &[], &[]);
    let (dataset, batch) = loading_batch(&server);
    let size = 200 * 1024 * 1024;
    let file: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    upload(&server, (&dataset, &batch), "big.bin", &file);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let path = format!("/data/foundation/export/files/{batch}?path=big.bin");
    let addr = server.addr;
    let downloads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                let request = tenant_head("GET", &path, "Connection: close\r\n");
                stream.write_all(request.as_bytes()).unwrap();
                let mut raw = Vec::new();
                stream.read_to_end(&mut raw).unwrap();
                let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                assert!(raw.starts_with(b"HTTP/1.1 200"));
                raw.split_off(split + 4)
            })
        })
        .collect();
    for d in downloads {
        assert!(d.join().unwrap() == file, "a download differs from the upload");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    let added = peak.saturating_sub(before);
    eprintln!(
        "4 downloads of 200 MiB: server RSS {} MiB before, peak {} MiB",
        before >> 20,
        peak >> 20
    );
    assert!(added < 64 * 1024 * 1024, "the downloads added {} MiB", added >> 20);
}

/// Issue 7, point 3: a download counts against the in-flight cap until it is sent, not only
/// while its handler runs (its body streams after the handler returned).
#[test]
fn downloads_count_against_the_in_flight_cap() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &["--max-in-flight", "2"], &[]);
    let (dataset, batch) = loading_batch(&server);
    upload(&server, (&dataset, &batch), "big.json", &vec![b' '; 32 * 1024 * 1024]);
    // Two downloads that read nothing: their answers wait in the socket buffers.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            let path = format!("/data/foundation/export/files/{batch}?path=big.json");
            s.write_all(tenant_head("GET", &path, "").as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) =
        server.http("GET", "/data/foundation/catalog/dataSets", &TENANT_HEADERS, None);
    assert_eq!(status, 503, "{body}");
    assert!(healthz(&server) < Duration::from_secs(1));
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) =
        server.http("GET", "/data/foundation/catalog/dataSets", &TENANT_HEADERS, None);
    assert_eq!(status, 200);
}

/// An error answered before the request body was read (an unknown route here) says
/// `connection: close`, as the server then closes the connection: a keep-alive client must not
/// send its next request on it (AEP's Python client hit that as RemoteDisconnected).
#[test]
fn errors_before_the_body_announce_the_close() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &[], &[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "x".repeat(100_000);
    let head = format!(
        "POST /no/such/route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 404"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // Without a body, the connection stays usable.
    let (status, _) = server.http("GET", "/no/such/route", &[], None);
    assert_eq!(status, 404);
}
