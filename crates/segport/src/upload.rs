//! `segport ingest --server URL`: loads local files into a dataset of a running deployment
//! through its Batch Ingestion API, as any AEP client would (create the batch, upload each file,
//! complete it once, wait for it), so that loading data needs a token, not database or storage
//! credentials.
//!
//! Files are streamed from disk. A file larger than the server's per-file cap (the
//! `x-segport-max-upload-bytes` header of the batch it creates) is sent as several files of the
//! same batch, cut at line boundaries (NDJSON only: a JSON array or a Parquet file cannot be cut
//! without parsing it). A failed upload is sent again: uploads replace a file of the same name,
//! so a retry never doubles records.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::TryStreamExt;
use segport_model::batch::IngestFormat;
use segport_model::DatasetId;
use segport_store::ingest::Progress;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::cli::IngestArgs;
use crate::ingest::{progress_bar, Summary};

/// The header of a batch-create answer that names the server's per-file cap.
const MAX_UPLOAD_HEADER: &str = "x-segport-max-upload-bytes";
/// The cap when the server names none (segport's default).
const DEFAULT_MAX_UPLOAD: u64 = 256 * 1024 * 1024;
/// Attempts per upload before the command gives up.
const UPLOAD_ATTEMPTS: u32 = 4;
/// Sent as `x-api-key`, which the API requires and does not check.
const API_KEY: &str = "segport-cli";

/// One file of the batch: a byte range of a local file, uploaded under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    source: PathBuf,
    name: String,
    offset: u64,
    len: u64,
}

struct Client {
    http: reqwest::Client,
    base: String,
    headers: reqwest::header::HeaderMap,
}

impl Client {
    fn new(server: &str, args: &IngestArgs) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "--server {server:?} must be an http:// or https:// URL"
        );
        let mut headers = reqwest::header::HeaderMap::new();
        let token = args.token.as_deref().unwrap_or("dev");
        let mut set = |name: &'static str, value: &str, what: &str| -> anyhow::Result<()> {
            let value = reqwest::header::HeaderValue::from_str(value)
                .with_context(|| format!("{what} holds characters a header cannot carry"))?;
            headers.insert(name, value);
            Ok(())
        };
        set("authorization", &format!("Bearer {token}"), "--token")?;
        set("x-api-key", API_KEY, "the API key")?;
        set("x-sandbox-name", &args.sandbox, "--sandbox")?;
        if let Some(org) = &args.org {
            set("x-gw-ims-org-id", org, "--org")?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { http, base, headers })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).headers(self.headers.clone())
    }

    /// Sends a request and reads its JSON answer; an error answer becomes an error that quotes
    /// the server's title.
    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Answer> {
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let said = body["title"].as_str().or(body["message"].as_str()).unwrap_or_default();
            bail!("{what}: the server answered {status}: {said}");
        }
        Ok(Answer { headers, body })
    }
}

struct Answer {
    headers: reqwest::header::HeaderMap,
    body: Value,
}

pub async fn run(
    server: &str,
    args: &IngestArgs,
    dataset: DatasetId,
    format: IngestFormat,
) -> anyhow::Result<()> {
    let client = Client::new(server, args)?;
    let mut input_format = json!({"format": format.as_str()});
    if args.multiline_json {
        input_format["isMultiLineJson"] = json!(true);
    }
    let created = client
        .call(
            client
                .request(reqwest::Method::POST, "/data/foundation/import/batches")
                .json(&json!({"datasetId": dataset, "inputFormat": input_format})),
            "creating the batch",
        )
        .await?;
    let batch = created.body["id"].as_str().context("the server answered no batch id")?.to_owned();
    let cap = created
        .headers
        .get(MAX_UPLOAD_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_UPLOAD);
    let splittable = format == IngestFormat::Json && !args.multiline_json;
    let mut parts = Vec::new();
    for file in &args.files {
        parts.extend(plan(file, cap, splittable).await?);
    }
    let total: u64 = parts.iter().map(|p| p.len).sum();
    eprintln!(
        "batch {batch} created on {}; uploading {} file(s), {:.1} MiB",
        client.base,
        parts.len(),
        total as f64 / 1_048_576.0
    );

    let start = Instant::now();
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(args.quiet, total, progress.clone(), false);
    if let Some(bar) = &bar {
        bar.set_message("uploading");
    }
    for part in &parts {
        upload(&client, &batch, &dataset, part, &progress).await?;
    }
    if let Some(bar) = &bar {
        bar.set_message("ingesting on the server");
    }
    complete(&client, &batch).await?;
    let done = wait(&client, &batch).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let count = |key: &str| done[key].as_i64().unwrap_or(0);
    let errors = done["errors"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                    let rows = e["rows"].as_array().map(|r| r.iter().filter_map(Value::as_u64));
                    (text("code"), text("description"), rows.into_iter().flatten().collect())
                })
                .collect()
        })
        .unwrap_or_default();
    Summary {
        batch_id: batch,
        status: done["status"].as_str().unwrap_or("unknown").to_owned(),
        records: count("recordCount"),
        failed: count("failedRecordCount"),
        errors,
    }
    .print(start.elapsed(), total)
}

/// The parts a file is sent as: itself when it fits under `cap`, else (NDJSON only) ranges of
/// whole lines under the cap, named `stem.partNNNN.ext`.
async fn plan(file: &Path, cap: u64, splittable: bool) -> anyhow::Result<Vec<Part>> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", file.display()))?;
    segport_store::storage::valid_upload_name(name).map_err(anyhow::Error::msg)?;
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size == 0 {
        bail!("{} is empty", file.display());
    }
    let whole = || Part { source: file.to_owned(), name: name.to_owned(), offset: 0, len: size };
    if size <= cap {
        return Ok(vec![whole()]);
    }
    if !splittable {
        bail!(
            "{} is {size} bytes, more than the server takes in one file ({cap}); only NDJSON \
             can be split: convert it, or raise the server's --max-upload-bytes",
            file.display()
        );
    }
    let ranges = line_ranges(file, cap).await?;
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) => (stem, format!(".{ext}")),
        None => (name, String::new()),
    };
    Ok(ranges
        .into_iter()
        .enumerate()
        .map(|(i, (offset, len))| Part {
            source: file.to_owned(),
            name: format!("{stem}.part{:04}{ext}", i + 1),
            offset,
            len,
        })
        .collect())
}

/// Cuts a file into ranges of at most `cap` bytes that end just after a newline (the last one
/// at the end of the file), reading it once in blocks.
async fn line_ranges(file: &Path, cap: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut input = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let mut ranges = Vec::new();
    let (mut start, mut last_newline, mut position) = (0u64, None::<u64>, 0u64);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buffer)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        if n == 0 {
            break;
        }
        for i in memchr::memchr_iter(b'\n', &buffer[..n]) {
            let end = position + i as u64 + 1;
            if end - start > cap {
                if let Some(cut) = last_newline.filter(|&c| c > start) {
                    ranges.push((start, cut - start));
                    start = cut;
                }
                if end - start > cap {
                    bail!(
                        "{}: the line ending at byte {end} is longer than the server takes in \
                         one file ({cap} bytes)",
                        file.display()
                    );
                }
            }
            last_newline = Some(end);
        }
        position += n as u64;
    }
    // A last line without a newline.
    if position - start > cap {
        if let Some(cut) = last_newline.filter(|&c| c > start) {
            ranges.push((start, cut - start));
            start = cut;
        }
        anyhow::ensure!(
            position - start <= cap,
            "{}: its last line is longer than the server takes in one file ({cap} bytes)",
            file.display()
        );
    }
    if position > start {
        ranges.push((start, position - start));
    }
    Ok(ranges)
}

/// Uploads one part, streamed from disk, sending it again after a failure.
async fn upload(
    client: &Client,
    batch: &str,
    dataset: &DatasetId,
    part: &Part,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    let sent = &progress.bytes;
    let path = format!(
        "/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{}",
        encode_path(&part.name)
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = sent.load(Ordering::Relaxed);
        let result = send_part(client, &path, part, progress.clone()).await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if attempt < UPLOAD_ATTEMPTS && e.retry => {
                // What the failed attempt counted is sent again.
                sent.store(before, Ordering::Relaxed);
                eprintln!("upload of {} failed ({}); sending it again", part.name, e.error);
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(e) => {
                return Err(e.error.context(format!("cannot upload {}", part.source.display())))
            }
        }
    }
}

struct UploadError {
    error: anyhow::Error,
    /// A transport failure or a server error (5xx, 408, 429), worth another attempt.
    retry: bool,
}

async fn send_part(
    client: &Client,
    path: &str,
    part: &Part,
    progress: Arc<Progress>,
) -> Result<(), UploadError> {
    let fail = |error: anyhow::Error, retry: bool| UploadError { error, retry };
    let mut file = tokio::fs::File::open(&part.source)
        .await
        .map_err(|e| fail(anyhow::Error::new(e).context("cannot open the file"), false))?;
    file.seek(std::io::SeekFrom::Start(part.offset))
        .await
        .map_err(|e| fail(anyhow::Error::new(e).context("cannot read the file"), false))?;
    let counted = ReaderStream::new(file.take(part.len)).inspect_ok(move |chunk| {
        progress.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    });
    let response = client
        .request(reqwest::Method::PUT, path)
        .header("content-type", "application/octet-stream")
        .header("content-length", part.len)
        .body(reqwest::Body::wrap_stream(counted))
        .send()
        .await
        .map_err(|e| fail(anyhow::Error::new(e), true))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let said = body["title"].as_str().unwrap_or_default();
    let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
    Err(fail(anyhow::anyhow!("the server answered {status}: {said}"), retry))
}

/// Completes the batch, once: only when the answer is lost is the batch looked at, and
/// completed again only if it is still loading.
async fn complete(client: &Client, batch: &str) -> anyhow::Result<()> {
    let path = format!("/data/foundation/import/batches/{batch}?action=COMPLETE");
    match client.call(client.request(reqwest::Method::POST, &path), "completing the batch").await {
        Ok(_) => Ok(()),
        Err(first) => {
            let status = batch_object(client, batch).await?;
            if status["status"] == "loading" {
                client
                    .call(client.request(reqwest::Method::POST, &path), "completing the batch")
                    .await
                    .map(drop)
                    .map_err(|e| e.context(first.to_string()))
            } else {
                Ok(())
            }
        }
    }
}

async fn batch_object(client: &Client, batch: &str) -> anyhow::Result<Value> {
    let path = format!("/data/foundation/catalog/batches/{batch}");
    let answer =
        client.call(client.request(reqwest::Method::GET, &path), "reading the batch").await?;
    Ok(answer.body[batch].clone())
}

/// Waits until the server has ingested the batch; answers its final object.
async fn wait(client: &Client, batch: &str) -> anyhow::Result<Value> {
    loop {
        let object = batch_object(client, batch).await?;
        if matches!(object["status"].as_str(), Some("success" | "failed" | "aborted")) {
            return Ok(object);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A file name as a URL path: each segment percent-encoded.
fn encode_path(name: &str) -> String {
    name.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_cut_at_line_boundaries_under_the_cap() {
        let dir = std::env::temp_dir().join(format!("segport-upload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.ndjson");
        let lines: Vec<String> =
            (0..200).map(|i| format!("{{\"n\":{}}}", "x".repeat(i % 17))).collect();
        let text = lines.join("\n") + "\n";
        std::fs::write(&file, &text).unwrap();
        for cap in [40, 64, 100, 1000, text.len() as u64] {
            let parts = plan(&file, cap, true).await.unwrap();
            // The oracle: the parts put back together are the file, each under the cap and
            // ending at a line end.
            let mut joined = String::new();
            for p in &parts {
                assert!(p.len <= cap, "{p:?}");
                let piece = &text[p.offset as usize..(p.offset + p.len) as usize];
                assert!(piece.ends_with('\n'), "{piece:?}");
                joined.push_str(piece);
            }
            assert_eq!(joined, text, "cap {cap}");
            if cap < text.len() as u64 {
                assert_eq!(parts[0].name, "p.part0001.ndjson");
            } else {
                assert_eq!(parts[0].name, "p.ndjson");
            }
        }
        assert!(plan(&file, 10, true).await.is_err(), "a line longer than the cap");
        assert!(plan(&file, 100, false).await.is_err(), "only NDJSON is cut");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_encoded_segment_by_segment() {
        assert_eq!(encode_path("dir/a b#?.json"), "dir/a%20b%23%3F.json");
    }
}
