//! Webhooks: a sandbox's endpoints, the outbox of events written with the status changes they
//! report, and the deliveries dispatchers claim, attempt and log.

use async_trait::async_trait;
use segport_model::webhook::{Delivery, Endpoint, EventType};
use segport_model::Tenant;

use crate::{ListQuery, Result};

/// A delivery claimed for an attempt: where it goes, what it carries and how to sign it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub endpoint: Endpoint,
    /// The `webhook-id`, the same at every attempt.
    pub msg_id: String,
    pub event_type: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_ms: i64,
}

/// What an attempt came to.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// Any other answer, or none: tried again at `retry_at_ms`, or given up when `None`
    /// (then the endpoint is disabled with `reason`).
    Failed { status: Option<u16>, error: String, retry_at_ms: Option<i64> },
}

/// A sandbox's webhook endpoints, its outbox and delivery log.
#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    /// Stores a new endpoint; `Conflict` when the sandbox holds `max` already.
    async fn create_endpoint(&self, endpoint: &Endpoint, max: u64) -> Result<()>;
    async fn get_endpoint(&self, tenant: &Tenant, id: &str) -> Result<Option<Endpoint>>;
    async fn list_endpoints(&self, tenant: &Tenant, page: &ListQuery) -> Result<Vec<Endpoint>>;
    /// Replaces url, description, events, enabled state and secrets; false when gone.
    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<bool>;
    /// Deletes an endpoint and its deliveries.
    async fn delete_endpoint(&self, tenant: &Tenant, id: &str) -> Result<bool>;
    /// An endpoint's deliveries, newest first.
    async fn list_deliveries(
        &self,
        tenant: &Tenant,
        endpoint_id: &str,
        page: &ListQuery,
    ) -> Result<Vec<Delivery>>;
    /// Writes an event for one endpoint only, whatever its filter (a test event).
    async fn send_test_event(
        &self,
        tenant: &Tenant,
        endpoint_id: &str,
        payload: &str,
        now_ms: i64,
    ) -> Result<Option<String>>;
    /// Claims up to `limit` due deliveries for `lease_ms` (a claim not recorded by then is due
    /// again: at least once).
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Records an attempt. A delivery given up disables its endpoint with `disable_reason`.
    async fn record_attempt(
        &self,
        delivery_id: i64,
        result: &AttemptResult,
        disable_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<()>;
    /// Deletes finished deliveries and events older than `before_ms` (pending ones stay);
    /// answers how many rows went.
    async fn prune_webhooks(&self, before_ms: i64) -> Result<u64>;
    /// Events waiting for delivery, for tests and metrics.
    async fn pending_deliveries(&self, tenant: &Tenant) -> Result<u64>;
}

/// The event types a job's end reports: cancelled when a cancel was asked for, whatever error
/// the worker ended with.
pub fn job_end_event(succeeded: bool, cancel_requested: bool) -> EventType {
    match (succeeded, cancel_requested) {
        (true, _) => EventType::ExportSucceeded,
        (false, true) => EventType::ExportCancelled,
        (false, false) => EventType::ExportFailed,
    }
}
