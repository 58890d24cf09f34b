//! The dispatcher: claims due deliveries from the catalog's outbox, sends each signed, and
//! records the attempt. Every API process runs one; claims lock their rows (skipping those
//! another dispatcher holds), and a claim not recorded within its lease is due again, so each
//! delivery is attempted at least once with its stable `webhook-id`, whichever process dies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use segport_catalog::{AttemptResult, CatalogError, ClaimedDelivery, Webhooks};
use segport_model::time::now_ms;
use tokio_util::sync::CancellationToken;

use crate::guard::AddressPolicy;
use crate::sign::signature_header;

/// When a failed delivery is tried again, and when it is given up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; each later one doubles it.
    pub first: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// A delivery not made within this time of its event is given up.
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts of a delivery created at
    /// `created_ms`: the doubled wait, jittered down by up to a half so that retries of many
    /// deliveries spread out; `None` once that would pass the window.
    pub fn next_attempt(&self, attempts: i32, created_ms: i64, now_ms: i64) -> Option<i64> {
        let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(30);
        let delay = self.first.saturating_mul(1 << doublings).min(self.max_delay);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let jittered = delay_ms / 2 + rand::thread_rng().gen_range(0..=delay_ms / 2);
        let at = now_ms.saturating_add(jittered);
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        (at <= created_ms.saturating_add(window_ms)).then_some(at)
    }
}

/// How a dispatcher runs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// How often it looks for due deliveries.
    pub poll: Duration,
    /// The time a request may take, connection included.
    pub timeout: Duration,
    /// Deliveries sent at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Finished deliveries and their events are deleted after this long.
    pub retention: Duration,
    pub addresses: AddressPolicy,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            retry: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            addresses: AddressPolicy::default(),
        }
    }
}

/// Resolves names for the client, keeping only the addresses the policy permits: the client
/// connects to what this returns, so the address checked is the address called.
struct GuardedResolver {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let permitted = policy.filter(resolved)?;
            let addrs: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// Sends webhook deliveries from the catalog's outbox.
pub struct Dispatcher {
    catalog: Arc<dyn Webhooks>,
    client: reqwest::Client,
    config: DispatchConfig,
}

impl Dispatcher {
    pub fn new(catalog: Arc<dyn Webhooks>, config: DispatchConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the address check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: config.addresses.clone() }))
            .user_agent(concat!("segport-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self { catalog, client, config })
    }

    /// Delivers until `shutdown`, pruning old deliveries hourly.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_prune = 0;
        loop {
            let now = now_ms();
            let busy = match self.dispatch_once().await {
                Ok(n) => n >= self.claim_size(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying");
                    false
                }
            };
            if now - last_prune > 3_600_000 {
                last_prune = now;
                let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(0);
                match self.catalog.prune_webhooks(now - retention).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "old webhook deliveries pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune webhook deliveries"),
                }
            }
            // A full claim suggests more are due: claim again at once.
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    fn claim_size(&self) -> usize {
        self.config.concurrency.max(1) * 2
    }

    /// Claims the due deliveries (up to twice the concurrency) and attempts them; answers how
    /// many were claimed.
    pub async fn dispatch_once(&self) -> Result<usize, CatalogError> {
        let now = now_ms();
        // A claim outlives the request's timeout: only a dispatcher gone leaves it unrecorded.
        let lease = i64::try_from(self.config.timeout.as_millis()).unwrap_or(10_000) * 2 + 30_000;
        let limit = u32::try_from(self.claim_size()).unwrap_or(32);
        let claimed = self.catalog.claim_deliveries(now, lease, limit).await?;
        let n = claimed.len();
        let outcomes: Vec<Result<(), CatalogError>> = futures::stream::iter(claimed)
            .map(|d| self.deliver(d))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            outcome?;
        }
        Ok(n)
    }

    async fn deliver(&self, d: ClaimedDelivery) -> Result<(), CatalogError> {
        let result = if d.endpoint.enabled {
            self.attempt(&d).await
        } else {
            Err((None, "the endpoint is disabled".to_owned()))
        };
        let now = now_ms();
        let (result, disable) = match result {
            Ok(status) => (AttemptResult::Delivered { status }, None),
            Err((status, error)) => {
                let retry_at_ms = if d.endpoint.enabled {
                    self.config.retry.next_attempt(d.attempts + 1, d.created_ms, now)
                } else {
                    None
                };
                let disable = (retry_at_ms.is_none() && d.endpoint.enabled).then(|| {
                    format!(
                        "disabled: no delivery succeeded within {} of an event ({} attempts; last: {error})",
                        humanize(self.config.retry.window),
                        d.attempts + 1
                    )
                });
                tracing::info!(delivery = d.id, endpoint = %d.endpoint.id, attempts = d.attempts + 1, error = %error, retry_at_ms, "webhook delivery failed");
                (AttemptResult::Failed { status, error, retry_at_ms }, disable)
            }
        };
        self.catalog.record_attempt(d.id, &result, disable.as_deref(), now).await
    }

    /// One signed POST: the status of a 2xx answer, or the status (if any) and what went wrong.
    async fn attempt(&self, d: &ClaimedDelivery) -> Result<u16, (Option<u16>, String)> {
        let url = reqwest::Url::parse(&d.endpoint.url)
            .map_err(|e| (None, format!("the endpoint URL is invalid: {e}")))?;
        // Literal addresses are not resolved, so the resolver does not see them.
        let literal = url.host_str().and_then(|h| {
            h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok()
        });
        if let Some(ip) = literal {
            self.config.addresses.check(ip).map_err(|e| (None, e.to_string()))?;
        }
        let now = now_ms();
        let timestamp = now.div_euclid(1000);
        let secrets = d.endpoint.signing_secrets(now);
        let signature = signature_header(&secrets, &d.msg_id, timestamp, &d.payload);
        let answer = self
            .client
            .post(url)
            .header("webhook-id", &d.msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(d.payload.clone())
            .send()
            .await
            .map_err(|e| (None, error_chain(&e)))?;
        let status = answer.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else if status.is_redirection() {
            Err((Some(status.as_u16()), format!("answered {status}; redirects are not followed")))
        } else {
            Err((Some(status.as_u16()), format!("answered {status}")))
        }
    }
}

/// An error and its causes, one line: reqwest's own message rarely says why.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_window() {
        let retry = RetryPolicy {
            first: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(300),
        };
        for (attempts, full) in [(1, 10_000), (2, 20_000), (3, 40_000), (4, 60_000), (9, 60_000)] {
            for _ in 0..50 {
                let at = retry.next_attempt(attempts, 0, 0).unwrap();
                assert!((full / 2..=full).contains(&at), "{attempts}: {at}");
            }
        }
        assert_eq!(retry.next_attempt(1, 0, 295_000), None);
        assert!(retry.next_attempt(1, 0, 290_000).is_some());
    }
}
