//! Webhooks on SQL: endpoints, the outbox (an event row and one delivery row per endpoint that
//! takes it, written inside the transaction of the status change the event reports), the
//! dispatchers' claims and attempts, and retention.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::job::{ExportJobRecord, JobStatus};
use segport_model::webhook::{self, Delivery, Endpoint, EventType};
use segport_model::Tenant;
use serde_json::json;

use super::common::Statement;
use super::{SqlCatalog, Tx, DIALECT};
use crate::model::{as_i64, convert_all, BatchRow, DeliveryRow, EndpointRow, JobRow};
use crate::webhooks::{job_end_event, AttemptResult, ClaimedDelivery};
use crate::{CatalogError, ListQuery, Result, Webhooks};

const ENDPOINT_COLUMNS: &str = "id, org, sandbox, url, description, events, secret, \
     previous_secret, previous_until_ms, enabled, disabled_reason, create_ms, update_ms";

const INSERT_ENDPOINT: &str = "INSERT INTO webhook_endpoints (id, org, sandbox, url, \
     description, events, secret, previous_secret, previous_until_ms, enabled, disabled_reason, \
     create_ms, update_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

const COUNT_ENDPOINTS: &str =
    "SELECT COUNT(*) FROM webhook_endpoints WHERE org = $1 AND sandbox = $2";

const UPDATE_ENDPOINT: &str = "UPDATE webhook_endpoints SET url = $4, description = $5, \
     events = $6, secret = $7, previous_secret = $8, previous_until_ms = $9, enabled = $10, \
     disabled_reason = $11, update_ms = $12 WHERE id = $1 AND org = $2 AND sandbox = $3";

const DELETE_ENDPOINT: &str =
    "DELETE FROM webhook_endpoints WHERE org = $1 AND sandbox = $2 AND id = $3";

/// The enabled endpoints of a sandbox that take an event type (`$3`: `%,type,%`).
const SUBSCRIBED_ENDPOINTS: &str = "SELECT id FROM webhook_endpoints WHERE org = $1 \
     AND sandbox = $2 AND enabled = $4 AND (events IS NULL OR events LIKE $3) ORDER BY id";

const INSERT_EVENT: &str = "INSERT INTO webhook_events (msg_id, org, sandbox, event_type, \
     payload, created_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, \
     attempts, next_attempt_ms, created_ms, updated_ms) VALUES ($1, $2, 'pending', 0, $3, $3, $3)";

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, e.msg_id, e.event_type, d.state, \
     d.attempts, d.next_attempt_ms, d.last_status, d.last_error, d.created_ms, d.updated_ms";

/// Moves a delivery's attempt time on by the claim's lease and counts the attempt.
const TAKE_DELIVERY: &str = "UPDATE webhook_deliveries SET next_attempt_ms = $2, \
     attempts = attempts + 1, updated_ms = $3 WHERE id = $1 AND state = 'pending' \
     RETURNING attempts";

const CLAIMED_DELIVERY: &str = "SELECT e.msg_id, e.event_type, e.payload, d.created_ms, \
     d.endpoint_id FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
     WHERE d.id = $1";

const DELIVERED: &str = "UPDATE webhook_deliveries SET state = 'delivered', last_status = $2, \
     last_error = NULL, updated_ms = $3 WHERE id = $1 AND state = 'pending'";

const ATTEMPT_FAILED: &str = "UPDATE webhook_deliveries SET state = $2, last_status = $3, \
     last_error = $4, next_attempt_ms = $5, updated_ms = $6 WHERE id = $1 AND state = 'pending' \
     RETURNING endpoint_id, created_ms";

/// Disables an endpoint whose delivery was given up, unless it delivered anything since that
/// delivery's event (`$6`): one refused message does not make an endpoint failing.
const DISABLE_ENDPOINT: &str = "UPDATE webhook_endpoints SET enabled = $2, \
     disabled_reason = $3, update_ms = $4 WHERE id = $1 AND enabled = $5 \
     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.endpoint_id = $1 \
     AND x.state = 'delivered' AND x.updated_ms >= $6)";

/// A disabled endpoint's pending deliveries fail with it.
const FAIL_PENDING: &str = "UPDATE webhook_deliveries SET state = 'failed', last_error = $2, \
     updated_ms = $3 WHERE endpoint_id = $1 AND state = 'pending'";

const PRUNE_DELIVERIES: &str =
    "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND updated_ms < $1";

const PRUNE_EVENTS: &str = "DELETE FROM webhook_events WHERE created_ms < $1 \
     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)";

const PENDING_DELIVERIES: &str = "SELECT COUNT(*) FROM webhook_deliveries d \
     JOIN webhook_endpoints p ON p.id = d.endpoint_id \
     WHERE p.org = $1 AND p.sandbox = $2 AND d.state = 'pending'";

/// A job with its policy, by id alone (the outbox reads it inside the transaction that ended it).
const JOB_BY_ID: &str = "SELECT id, org, sandbox, status, spec, merge_policy, errors, warnings, \
     progress, counters, attempt, attempt_id, cancel_requested, request_id, creation_ms, \
     update_ms, started_ms, finished_ms, units_total, schedule_id FROM export_jobs WHERE id = $1";

const BATCH_BY_ID: &str = "SELECT * FROM batches WHERE id = $1";

/// What decides the event of a job's end, and whether any endpoint takes it.
const JOB_END: &str =
    "SELECT org, sandbox, status, cancel_requested FROM export_jobs WHERE id = $1";

/// The same for a batch.
const BATCH_END: &str = "SELECT org, sandbox, kind, status FROM batches WHERE id = $1";

impl SqlCatalog {
    /// The enabled endpoints of `tenant` that take events of `kind`, inside `tx`.
    async fn subscribers(
        tx: &mut Tx<'_>,
        tenant: (&str, &str),
        kind: EventType,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(SUBSCRIBED_ENDPOINTS)
            .bind(tenant.0)
            .bind(tenant.1)
            .bind(format!("%,{},%", kind.as_str()))
            .bind(true)
            .fetch_all(&mut **tx)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Writes an event of `kind` for every enabled endpoint of the tenant that takes it, inside
    /// `tx`; nothing when none does. `data` (the object and its reference) is built only then.
    pub(super) async fn emit(
        tx: &mut Tx<'_>,
        tenant: (&str, &str),
        kind: EventType,
        data: impl FnOnce() -> Result<(serde_json::Value, serde_json::Value)>,
        now_ms: i64,
    ) -> Result<()> {
        let endpoints = Self::subscribers(tx, tenant, kind).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let (data, reference) = data()?;
        let payload = webhook::payload(kind, now_ms, &data, &reference);
        Self::write_event(tx, tenant, kind, &payload, &endpoints, now_ms).await?;
        Ok(())
    }

    /// The event row and one delivery per endpoint; yields the event's `webhook-id`.
    async fn write_event(
        tx: &mut Tx<'_>,
        tenant: (&str, &str),
        kind: EventType,
        payload: &str,
        endpoints: &[String],
        now_ms: i64,
    ) -> Result<String> {
        let msg_id = format!("msg_{}", segport_model::ids::new_uuid().simple());
        let (event_id,): (i64,) = sqlx::query_as(INSERT_EVENT)
            .bind(&msg_id)
            .bind(tenant.0)
            .bind(tenant.1)
            .bind(kind.as_str())
            .bind(payload)
            .bind(now_ms)
            .fetch_one(&mut **tx)
            .await?;
        for endpoint in endpoints {
            sqlx::query(INSERT_DELIVERY)
                .bind(event_id)
                .bind(endpoint)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
        }
        Ok(msg_id)
    }

    /// The event that export job `job_id`'s end reports (succeeded, failed, or cancelled when
    /// a cancel was asked for), inside the transaction that ended it. The whole job is read
    /// only when an endpoint takes the event.
    pub(super) async fn emit_job_end(tx: &mut Tx<'_>, job_id: i64, now_ms: i64) -> Result<()> {
        let ended: Option<(String, String, String, bool)> =
            sqlx::query_as(JOB_END).bind(job_id).fetch_optional(&mut **tx).await?;
        let Some((org, sandbox, status, cancel_requested)) = ended else { return Ok(()) };
        let kind = job_end_event(status == JobStatus::Succeeded.as_str(), cancel_requested);
        let endpoints = Self::subscribers(tx, (&org, &sandbox), kind).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let row: JobRow = sqlx::query_as(JOB_BY_ID).bind(job_id).fetch_one(&mut **tx).await?;
        let job = ExportJobRecord::try_from(row)?;
        let reference = json!({
            "id": job.id,
            "status": job.status,
            "href": format!("/data/core/ups/export/jobs/{}", job.id),
        });
        let data = serde_json::to_value(job.to_wire())?;
        let payload = webhook::payload(kind, now_ms, &data, &reference);
        Self::write_event(tx, (&org, &sandbox), kind, &payload, &endpoints, now_ms).await?;
        Ok(())
    }

    /// The event of ingest batch `batch_id` ending as it now stands, inside the transaction
    /// that ended it (export batches report through their jobs).
    pub(super) async fn emit_batch_end(tx: &mut Tx<'_>, batch_id: &str, now_ms: i64) -> Result<()> {
        let ended: Option<(String, String, String, String)> =
            sqlx::query_as(BATCH_END).bind(batch_id).fetch_optional(&mut **tx).await?;
        let kind = match ended.as_ref().map(|(_, _, kind, status)| (kind.as_str(), status.as_str()))
        {
            Some(("ingest", "success")) => EventType::IngestSucceeded,
            Some(("ingest", "failed")) => EventType::IngestFailed,
            _ => return Ok(()),
        };
        let Some((org, sandbox, _, _)) = ended else { return Ok(()) };
        let endpoints = Self::subscribers(tx, (&org, &sandbox), kind).await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let row: BatchRow = sqlx::query_as(BATCH_BY_ID).bind(batch_id).fetch_one(&mut **tx).await?;
        let batch = segport_model::batch::Batch::try_from(row)?;
        let reference = json!({
            "id": batch.id.as_str(),
            "status": batch.status.as_str(),
            "href": format!("/data/foundation/catalog/batches/{}", batch.id.as_str()),
        });
        let payload = webhook::payload(kind, now_ms, &batch.to_wire(), &reference);
        Self::write_event(tx, (&org, &sandbox), kind, &payload, &endpoints, now_ms).await?;
        Ok(())
    }
}

/// Binds `$1` to `$11` of [`INSERT_ENDPOINT`] and [`UPDATE_ENDPOINT`]: the endpoint's id and
/// tenant, then what clients and the dispatcher set.
fn bind_endpoint<'q>(statement: Statement<'q>, e: &'q Endpoint) -> Statement<'q> {
    statement
        .bind(&e.id)
        .bind(&e.org)
        .bind(&e.sandbox)
        .bind(&e.url)
        .bind(&e.description)
        .bind(webhook::events_column(e.events.as_deref()))
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_until_ms)
        .bind(e.enabled)
        .bind(&e.disabled_reason)
}

#[async_trait]
impl Webhooks for SqlCatalog {
    async fn create_endpoint(&self, e: &Endpoint, max: u64) -> Result<()> {
        let mut tx = self.write().begin().await?;
        let tenant = crate::model::tenant(&e.org, &e.sandbox, "webhook_endpoints")?;
        // Serialises creates in the sandbox, so the count holds.
        Self::lock_sandbox(&mut tx, &tenant).await?;
        let (n,): (i64,) = sqlx::query_as(COUNT_ENDPOINTS)
            .bind(&e.org)
            .bind(&e.sandbox)
            .fetch_one(&mut *tx)
            .await?;
        if n >= as_i64(max) {
            return Err(CatalogError::Conflict(format!(
                "sandbox {} holds {n} webhook endpoints, the most it may; delete one first",
                e.sandbox
            )));
        }
        bind_endpoint(sqlx::query(INSERT_ENDPOINT), e)
            .bind(e.create_ms)
            .bind(e.update_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_endpoint(&self, tenant: &Tenant, id: &str) -> Result<Option<Endpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE org = $1 AND sandbox = $2 AND id = $3"
        );
        self.fetch_scoped::<EndpointRow, _>(&sql, tenant, id).await
    }

    async fn list_endpoints(&self, tenant: &Tenant, page: &ListQuery) -> Result<Vec<Endpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org = $1 AND sandbox = $2 \
             ORDER BY create_ms, id LIMIT $3 OFFSET $4"
        );
        self.fetch_page::<EndpointRow, _>(&sql, tenant, page).await
    }

    async fn update_endpoint(&self, e: &Endpoint) -> Result<bool> {
        let mut tx = self.write().begin().await?;
        let n = bind_endpoint(sqlx::query(UPDATE_ENDPOINT), e)
            .bind(e.update_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 && !e.enabled {
            sqlx::query(FAIL_PENDING)
                .bind(&e.id)
                .bind("the endpoint was disabled")
                .bind(e.update_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn delete_endpoint(&self, tenant: &Tenant, id: &str) -> Result<bool> {
        let n = sqlx::query(DELETE_ENDPOINT)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .execute(self.write())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn list_deliveries(
        &self,
        tenant: &Tenant,
        endpoint_id: &str,
        page: &ListQuery,
    ) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN webhook_events e ON e.id = d.event_id \
             JOIN webhook_endpoints p ON p.id = d.endpoint_id \
             WHERE p.org = $1 AND p.sandbox = $2 AND d.endpoint_id = $3 \
             ORDER BY d.id DESC LIMIT $4 OFFSET $5"
        );
        let rows: Vec<DeliveryRow> = sqlx::query_as(&sql)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(endpoint_id)
            .bind(i64::from(page.limit))
            .bind(as_i64(page.start))
            .fetch_all(self.read())
            .await?;
        convert_all(rows)
    }

    async fn send_test_event(
        &self,
        tenant: &Tenant,
        endpoint_id: &str,
        payload: &str,
        now_ms: i64,
    ) -> Result<Option<String>> {
        let mut tx = self.write().begin().await?;
        let found: Option<(bool,)> = sqlx::query_as(
            "SELECT enabled FROM webhook_endpoints WHERE org = $1 AND sandbox = $2 AND id = $3",
        )
        .bind(tenant.org.as_str())
        .bind(tenant.sandbox.as_str())
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((enabled,)) = found else { return Ok(None) };
        if !enabled {
            return Err(CatalogError::Conflict(
                "the endpoint is disabled; enable it (PATCH enabled: true) to send to it".into(),
            ));
        }
        let tenant = (tenant.org.as_str(), tenant.sandbox.as_str());
        let ids = [endpoint_id.to_owned()];
        let msg_id =
            Self::write_event(&mut tx, tenant, EventType::Test, payload, &ids, now_ms).await?;
        tx.commit().await?;
        Ok(Some(msg_id))
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut tx = self.write().begin().await?;
        let due: Vec<(i64,)> = sqlx::query_as(DIALECT.due_deliveries)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for (id,) in due {
            let Some((attempts,)): Option<(i32,)> = sqlx::query_as(TAKE_DELIVERY)
                .bind(id)
                .bind(now_ms + lease_ms)
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await?
            else {
                continue;
            };
            let (msg_id, event_type, payload, created_ms, endpoint_id): (
                String,
                String,
                String,
                i64,
                String,
            ) = sqlx::query_as(CLAIMED_DELIVERY).bind(id).fetch_one(&mut *tx).await?;
            let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
            let endpoint: Endpoint = sqlx::query_as::<_, EndpointRow>(&sql)
                .bind(&endpoint_id)
                .fetch_one(&mut *tx)
                .await?
                .try_into()?;
            claimed.push(ClaimedDelivery {
                id,
                endpoint,
                msg_id,
                event_type,
                payload,
                attempts: attempts - 1,
                created_ms,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        delivery_id: i64,
        result: &AttemptResult,
        disable_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().begin().await?;
        match result {
            AttemptResult::Delivered { status } => {
                sqlx::query(DELIVERED)
                    .bind(delivery_id)
                    .bind(i32::from(*status))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            AttemptResult::Failed { status, error, retry_at_ms } => {
                let state = if retry_at_ms.is_some() { "pending" } else { "failed" };
                let endpoint: Option<(String, i64)> = sqlx::query_as(ATTEMPT_FAILED)
                    .bind(delivery_id)
                    .bind(state)
                    .bind(status.map(i32::from))
                    .bind(segport_model::error::clip(error, 1000).as_ref())
                    .bind(retry_at_ms.unwrap_or(now_ms))
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let (Some((endpoint, created_ms)), None, Some(reason)) =
                    (endpoint, retry_at_ms, disable_reason)
                {
                    let disabled = sqlx::query(DISABLE_ENDPOINT)
                        .bind(&endpoint)
                        .bind(false)
                        .bind(reason)
                        .bind(now_ms)
                        .bind(true)
                        .bind(created_ms)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if disabled == 1 {
                        sqlx::query(FAIL_PENDING)
                            .bind(&endpoint)
                            .bind(reason)
                            .bind(now_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune_webhooks(&self, before_ms: i64) -> Result<u64> {
        let mut tx = self.write().begin().await?;
        let deliveries =
            sqlx::query(PRUNE_DELIVERIES).bind(before_ms).execute(&mut *tx).await?.rows_affected();
        let events =
            sqlx::query(PRUNE_EVENTS).bind(before_ms).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(deliveries + events)
    }

    async fn pending_deliveries(&self, tenant: &Tenant) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(PENDING_DELIVERIES)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .fetch_one(self.read())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
