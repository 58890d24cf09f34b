//! A minimal HTTP/1.1 client over one kept-alive connection: what the harness and the load
//! generator need, with nothing between the request and the socket that would blur a latency.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

/// Headers every segport call carries.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub token: String,
    pub org: String,
    pub sandbox: String,
}

/// A new HTTP/1.1 connection to `addr`.
async fn open(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One connection to a segport server.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    tenant: Tenant,
}

impl Client {
    pub async fn connect(addr: &str, tenant: Tenant) -> anyhow::Result<Self> {
        Ok(Self { sender: open(addr).await?, host: addr.to_owned(), tenant })
    }

    /// Sends one request and returns the status and raw body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.tenant.token))
            .header("x-api-key", "segport-bench")
            .header("x-gw-ims-org-id", &self.tenant.org)
            .header("x-sandbox-name", &self.tenant.sandbox);
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(b)?))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body)?;
        // The server closes a kept-alive connection left idle past its header timeout (while
        // the harness digests a large output, say): then, and when the request could not be
        // sent for the connection closing under it, the request goes on a new connection. A
        // request that may have reached the server is never sent twice.
        if self.sender.is_closed() {
            self.sender = open(&self.host).await?;
        }
        let response = match self.send(request.clone()).await {
            Err(e) if e.is_canceled() => {
                self.sender = open(&self.host).await?;
                self.send(request).await
            }
            other => other,
        }
        .with_context(|| format!("sending {path}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {path}"))?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(request).await
    }

    /// Sends one request that must succeed and returns its JSON body.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.call(method.clone(), path, body).await?;
        anyhow::ensure!(
            status.is_success(),
            "{method} {path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: not JSON"))
    }
}
