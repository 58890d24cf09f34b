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

/// One connection to a segport server.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    tenant: Tenant,
}

impl Client {
    pub async fn connect(addr: &str, tenant: Tenant) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        Ok(Self { sender, host: addr.to_owned(), tenant })
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
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(body)?).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
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
