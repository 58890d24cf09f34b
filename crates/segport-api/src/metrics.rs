//! Prometheus metrics of the API: requests and latencies by route and status on every port;
//! export jobs by tenant and status only on the metrics address (`--metrics-listen`), read from
//! the counts the catalog maintains, so tenants of the API port never see each other's figures
//! and a scrape costs no count over the jobs.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use segport_catalog::{Jobs, QueueStats};

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    org: String,
    sandbox: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    org: String,
    sandbox: String,
    kind: String,
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The API's metric registry.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RequestLabels>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("segport");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route, method and status",
            latency.clone(),
        );
        Self { registry, requests, latency }
    }

    /// The registry `/metrics` renders, for a process's other parts (the worker) to register
    /// their metrics in before the API starts.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    fn observe(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let method = match *method {
            Method::GET
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::HEAD => method.as_str().to_owned(),
            _ => "OTHER".to_owned(),
        };
        let labels = RequestLabels { route: route.to_owned(), method, status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// The Prometheus text exposition of the process's metrics; with `tenants`, also export
    /// jobs by tenant and status and the task queue's depth by tenant (for the metrics address
    /// only). A series the catalog cannot be read for is left out and the failure logged.
    pub async fn render(&self, tenants: Option<(&dyn Jobs, &dyn QueueStats)>) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        let Some((jobs, queue)) = tenants else { return out };
        // A registry per scrape: a tenant whose jobs are gone leaves no stale series.
        let mut registry = Registry::with_prefix("segport");
        match jobs.count_jobs().await {
            Ok(counts) => {
                let family = Family::<JobLabels, Gauge>::default();
                registry.register(
                    "export_jobs",
                    "Export jobs by tenant and status",
                    family.clone(),
                );
                for c in counts {
                    let labels =
                        JobLabels { org: c.org, sandbox: c.sandbox, status: c.status.to_string() };
                    family.get_or_create(&labels).set(c.n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the job counts for /metrics"),
        }
        match queue.queue_depth().await {
            Ok(depths) => {
                let family = Family::<TaskLabels, Gauge>::default();
                registry.register(
                    "tasks",
                    "Queued and running tasks (exports, ingests) by tenant",
                    family.clone(),
                );
                for d in depths {
                    for (state, n) in [("queued", d.queued), ("running", d.running)] {
                        let labels = TaskLabels {
                            org: d.org.clone(),
                            sandbox: d.sandbox.clone(),
                            kind: d.kind.as_str().to_owned(),
                            state: state.to_owned(),
                        };
                        family.get_or_create(&labels).set(n);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the queue depth for /metrics"),
        }
        let mut tenant_text = String::new();
        match encode(&mut tenant_text, &registry) {
            // Both expositions end with `# EOF`; one is kept, at the end.
            Ok(()) => out = out.trim_end().trim_end_matches("# EOF").to_owned() + &tenant_text,
            Err(e) => tracing::error!(error = %e, "could not encode tenant metrics"),
        }
        out
    }
}

/// Middleware: counts and times every request by its route template (never the raw path, so
/// ids do not explode the label set).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().clone();
    let start = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe(
        &route,
        &method,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}
