//! The HTTP API of segport, on axum.
//!
//! It authenticates each request, scopes it to its (org, sandbox), validates it at the edge and
//! answers from the catalog: export jobs, Catalog datasets and batches, merge policies, Batch
//! Ingestion uploads, and the operational endpoints `/healthz`, `/readyz` and `/metrics`
//! (docs/api.md). It never evaluates profiles and never waits for an export.

pub mod auth;
mod console;
mod error;
mod extract;
pub mod metrics;
mod openapi;
pub mod reads;
pub(crate) mod routes;
pub mod scheduler;
mod segments;
pub mod server;

use std::sync::Arc;

use axum::extract::Request;
use axum::Router;
use segport_catalog::ApiCatalog;
use segport_store::Storage;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

pub use auth::AuthMode;
pub use error::ApiError;
pub use extract::parse_public_url;
pub use metrics::ApiMetrics;

/// JSON request bodies larger than this are refused with 413.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Uploaded files larger than this are refused with 413 unless configured otherwise.
pub const DEFAULT_MAX_UPLOAD: u64 = 256 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<dyn ApiCatalog>,
    /// Creates export jobs, the concurrent ones in shared transactions.
    pub jobs: Arc<segport_catalog::group::JobWriter>,
    pub storage: Storage,
    pub auth: Arc<auth::Authenticator>,
    pub metrics: Arc<ApiMetrics>,
    /// Largest file accepted by the Batch Ingestion upload.
    pub max_upload_bytes: u64,
    /// Time and concurrency limits of requests.
    pub limits: RequestLimits,
    /// Permits of requests in flight ([`RequestLimits::max_in_flight`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Where clients reach the service, for absolute links; `None`: from the request's headers.
    pub public_url: Option<Arc<str>>,
    /// Engine reads (profile look-ups) running in this process.
    pub reads: reads::ReadPool,
    /// The segments of each sandbox's store, counted once per commit (the console's picker).
    segments: segments::SegmentCache,
}

/// Time and concurrency limits of requests (docs/limits.md). Connection-level limits (header
/// read, idle keep-alive) are the server's; these are the ones handlers and layers apply.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// An upload that sends nothing for this long is dropped (408).
    pub body_idle: std::time::Duration,
    /// Requests served at once; beyond it, every route but `/healthz` and `/readyz` answers
    /// 503 at once.
    pub max_in_flight: usize,
    /// Engine reads (profile look-ups) run at once; beyond it they answer 503.
    pub read_slots: usize,
    /// How long an engine read may take before it answers 504.
    pub read_deadline: std::time::Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            body_idle: std::time::Duration::from_secs(30),
            max_in_flight: 1024,
            read_slots: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            read_deadline: std::time::Duration::from_secs(10),
        }
    }
}

impl AppState {
    pub fn new(catalog: Arc<dyn ApiCatalog>, storage: Storage, auth: AuthMode) -> Self {
        Self {
            auth: Arc::new(auth::Authenticator::new(auth, catalog.clone())),
            jobs: Arc::new(segport_catalog::group::JobWriter::new(catalog.clone())),
            catalog,
            storage,
            metrics: Arc::new(ApiMetrics::new()),
            max_upload_bytes: DEFAULT_MAX_UPLOAD,
            limits: RequestLimits::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                RequestLimits::default().max_in_flight,
            )),
            public_url: None,
            reads: reads::ReadPool::new(
                RequestLimits::default().read_slots,
                RequestLimits::default().read_deadline,
            ),
            segments: segments::SegmentCache::default(),
        }
    }

    /// The state with `limits` in force.
    pub fn with_limits(mut self, limits: RequestLimits) -> Self {
        self.in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1)));
        self.reads = reads::ReadPool::new(limits.read_slots, limits.read_deadline);
        self.limits = limits;
        self
    }
}

/// Answers 503 at once when [`RequestLimits::max_in_flight`] requests are being served, except
/// on `/healthz` and `/readyz`: the probes must answer however busy the API is.
async fn limit_in_flight(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    match state.in_flight.clone().try_acquire_owned() {
        // The permit goes with the answer's body: a download streams after its handler
        // returned, and counts until it is sent (or dropped).
        Ok(permit) => next
            .run(request)
            .await
            .map(|inner| axum::body::Body::new(Permitted { inner, _permit: permit })),
        Err(_) => ApiError::Overloaded(state.limits.max_in_flight).into_response(),
    }
}

/// A response body holding its request's in-flight permit.
struct Permitted {
    inner: axum::body::Body,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl hyper::body::Body for Permitted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where the operator console is served (`/ui`): its routes are not in the OpenAPI description.
pub const CONSOLE_PREFIX: &str = console::PREFIX;

/// Which endpoints a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything: the public API and the operational endpoints.
    Full,
    /// Only `/healthz`, `/readyz` and `/metrics` (a worker-only process).
    OpsOnly,
}

/// The router, with trailing slashes trimmed before routing so `/export/jobs/` routes like
/// `/export/jobs`.
pub fn app(state: AppState, surface: Surface) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router(state, surface))
}

/// The OpenAPI description of what a process of `surface` serves (also at `/openapi.json`).
pub fn openapi_document(surface: Surface) -> utoipa::openapi::OpenApi {
    openapi::build(surface).1.as_ref().clone()
}

/// The router without path normalisation (tests that need the raw router use [`app`] anyway).
pub fn router(state: AppState, surface: Surface) -> Router {
    let (mut routes, _) = openapi::build(surface);
    // The console, off the OpenAPI description.
    if surface == Surface::Full {
        routes = routes.merge(console::routes());
    }
    routes
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_in_flight))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.limits.body_idle))
        .layer(axum::middleware::from_fn(error::with_request_id))
        .with_state(state)
}

/// The router of the metrics address (`--metrics-listen`): `/metrics` with the per-tenant
/// series, for operators, away from the API port's tenants.
pub fn metrics_app(state: AppState) -> NormalizePath<Router> {
    let router = Router::new()
        .route("/metrics", axum::routing::get(routes::ops::tenant_metrics))
        .fallback(routes::not_found)
        .with_state(state);
    NormalizePathLayer::trim_trailing_slash().layer(router)
}

/// The request type the app serves, for `tower::ServiceExt::oneshot` in tests.
pub type AppRequest = Request;
