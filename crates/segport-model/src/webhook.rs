//! Webhooks: the events segport sends, the endpoints a sandbox registers (as clients write them
//! and as the API shows them), and an event's payload as it is written to the outbox.
//!
//! Signing and sending are the dispatcher's (`segport-webhooks`); this module is I/O-free so
//! the catalog can write payloads in the transactions that change what they report.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::truncate;
use crate::validate::{join, Checker};
use crate::ValidationErrors;

/// Largest payload sent whole; a larger object goes by reference (its id and where to read it).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Longest endpoint URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest endpoint description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 512;
/// Endpoints one sandbox may register.
pub const MAX_ENDPOINTS_PER_SANDBOX: u64 = 50;

/// What happened, as the payload's `type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "export.succeeded")]
    ExportSucceeded,
    #[serde(rename = "export.failed")]
    ExportFailed,
    #[serde(rename = "export.cancelled")]
    ExportCancelled,
    #[serde(rename = "ingest.succeeded")]
    IngestSucceeded,
    #[serde(rename = "ingest.failed")]
    IngestFailed,
    #[serde(rename = "schedule.missed")]
    ScheduleMissed,
    /// Sent on request to one endpoint, whatever its filter (`…/endpoints/{id}/test`).
    #[serde(rename = "segport.test")]
    Test,
}

impl EventType {
    /// Every event an endpoint can subscribe to.
    pub const SUBSCRIBABLE: [EventType; 6] = [
        EventType::ExportSucceeded,
        EventType::ExportFailed,
        EventType::ExportCancelled,
        EventType::IngestSucceeded,
        EventType::IngestFailed,
        EventType::ScheduleMissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ExportSucceeded => "export.succeeded",
            EventType::ExportFailed => "export.failed",
            EventType::ExportCancelled => "export.cancelled",
            EventType::IngestSucceeded => "ingest.succeeded",
            EventType::IngestFailed => "ingest.failed",
            EventType::ScheduleMissed => "schedule.missed",
            EventType::Test => "segport.test",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = Self::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
            format!(
                "{:?} is not an event type{}",
                truncate(text),
                crate::suggest::hint(text, &names)
            )
        })
    }
}

/// An event's payload, as signed and sent: `{type, timestamp, data}` (the Standard Webhooks
/// form). When `data` would make it larger than [`MAX_PAYLOAD_BYTES`], `reference` (the object's
/// id and where to read it) goes instead, with `"truncated": true`.
pub fn payload(kind: EventType, timestamp_ms: i64, data: &Value, reference: &Value) -> String {
    let timestamp = chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let whole = json!({"type": kind.as_str(), "timestamp": timestamp, "data": data}).to_string();
    if whole.len() <= MAX_PAYLOAD_BYTES {
        return whole;
    }
    json!({"type": kind.as_str(), "timestamp": timestamp, "data": reference, "truncated": true})
        .to_string()
}

/// An endpoint as a client writes it (create, or the fields a replace sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInput {
    pub url: String,
    pub description: String,
    /// The event types sent; `None` for all.
    pub events: Option<Vec<EventType>>,
    /// `Some(true)` re-enables an endpoint disabled for failing.
    pub enabled: Option<bool>,
}

const ENDPOINT_KEYS: &[&str] = &["url", "description", "events", "enabled"];

impl EndpointInput {
    /// Checks a body: every problem in one answer. The URL is checked in form here; whether
    /// its address may be called is the dispatcher's check, at every delivery.
    pub fn parse(body: &Value) -> Result<Self, ValidationErrors> {
        let mut c = Checker::new();
        let Some(obj) = body.as_object() else {
            return Err(ValidationErrors::single(
                "body",
                "must be a JSON object with url and, optionally, description, events and enabled",
            ));
        };
        for key in obj.keys() {
            if !ENDPOINT_KEYS.contains(&key.as_str()) {
                let hint = crate::suggest::hint(key, ENDPOINT_KEYS);
                c.fail(truncate(key), format!("unknown field `{}`{hint}", truncate(key)));
            }
        }
        let url = c.required_string(obj, "url", "").and_then(|u| match check_url(u) {
            Ok(()) => Some(u.to_owned()),
            Err(message) => {
                c.fail("url", message);
                None
            }
        });
        let description = c.string(obj, "description", "").unwrap_or("").trim().to_owned();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            c.fail("description", format!("is longer than {MAX_DESCRIPTION_CHARS} characters"));
        }
        let events = c.array(obj, "events", "").map(|list| {
            let mut events = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let at = join("events", &i.to_string());
                match item.as_str().map(EventType::parse) {
                    Some(Ok(t)) if !events.contains(&t) => events.push(t),
                    Some(Ok(_)) => {}
                    Some(Err(message)) => c.fail(at, message),
                    None => c.fail(at, "must be a string, an event type"),
                }
            }
            if list.is_empty() {
                c.fail("events", "must name at least one event type; leave it out for all");
            }
            events
        });
        let enabled = c.bool(obj, "enabled", "");
        match url {
            Some(url) => c.errors.into_result(Self { url, description, events, enabled }),
            None => Err(c.errors),
        }
    }
}

/// An endpoint URL must be absolute `http` or `https`, with a host, no credentials and no
/// fragment.
fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("is longer than {MAX_URL_BYTES} bytes"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{:?} must start with https:// or http://", truncate(url)))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{:?} names no host", truncate(url)));
    }
    if authority.contains('@') {
        return Err("must not carry credentials (user@host); the signature authenticates".into());
    }
    if url.contains('#') {
        return Err("must not carry a fragment (#…)".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// An endpoint as the catalog keeps it (its secrets included; [`Endpoint::to_wire`] leaves
/// them out).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub org: String,
    pub sandbox: String,
    pub url: String,
    pub description: String,
    pub events: Option<Vec<EventType>>,
    /// `whsec_…`, shown once, at creation and at each rotation.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until_ms`.
    pub previous_secret: Option<String>,
    pub previous_until_ms: Option<i64>,
    pub enabled: bool,
    /// Why the dispatcher disabled it.
    pub disabled_reason: Option<String>,
    pub create_ms: i64,
    pub update_ms: i64,
}

impl Endpoint {
    /// The secrets that sign a delivery at `now_ms`: the current one, and the previous one
    /// within its grace period.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_until_ms) {
            if now_ms < until {
                secrets.push(previous);
            }
        }
        secrets
    }

    /// Whether this endpoint takes events of `kind`.
    pub fn takes(&self, kind: EventType) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }

    pub fn to_wire(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "events": self.events.as_ref().map(|e| e.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
            "enabled": self.enabled,
            "disabledReason": self.disabled_reason,
            "previousSecretValidUntil": self.previous_until_ms,
            "createdTime": self.create_ms,
            "updatedTime": self.update_ms,
        })
    }
}

/// `events` as the catalog stores it: comma-wrapped (`,export.failed,ingest.failed,`), so a
/// filter matches with `LIKE '%,type,%'`; `None` for all.
pub fn events_column(events: Option<&[EventType]>) -> Option<String> {
    events.map(|e| {
        let names: Vec<&str> = e.iter().map(|t| t.as_str()).collect();
        format!(",{},", names.join(","))
    })
}

/// The inverse of [`events_column`].
pub fn parse_events_column(text: Option<&str>) -> Result<Option<Vec<EventType>>, String> {
    text.map(|t| t.split(',').filter(|s| !s.is_empty()).map(EventType::parse).collect()).transpose()
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at its next attempt time.
    Pending,
    Delivered,
    /// Given up after the retry window.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(format!("unknown delivery state {other:?}")),
        }
    }
}

/// One event's delivery to one endpoint, as its log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint_id: String,
    /// The `webhook-id` of every attempt.
    pub msg_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_ms: Option<i64>,
    /// The last attempt's HTTP status, when it got one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Delivery {
    pub fn to_wire(&self) -> Value {
        json!({
            "id": self.id,
            "endpointId": self.endpoint_id,
            "webhookId": self.msg_id,
            "eventType": self.event_type,
            "state": self.state.as_str(),
            "attempts": self.attempts,
            "nextAttemptTime": self.next_attempt_ms,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "createdTime": self.created_ms,
            "updatedTime": self.updated_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_whole() {
        let ok = EndpointInput::parse(&json!({"url": "https://hooks.example.com/segport",
            "events": ["export.failed", "export.failed", "schedule.missed"]}))
        .unwrap();
        assert_eq!(ok.events, Some(vec![EventType::ExportFailed, EventType::ScheduleMissed]));
        let bad = EndpointInput::parse(&json!({"url": "ftp://x", "events": ["export.fail", 3],
            "description": 1, "secret": "x"}))
        .unwrap_err();
        let fields: Vec<String> = bad.0.iter().map(|e| e.field.clone()).collect();
        assert_eq!(fields, ["secret", "url", "description", "events.0", "events.1"]);
        assert!(bad.0[3].message.contains("export.failed"), "{:?}", bad.0[3]);
        for url in ["https://u:p@host/", "https:///x", "http://h/#frag", "http://h/a b"] {
            assert!(EndpointInput::parse(&json!({"url": url})).is_err(), "{url}");
        }
        assert!(EndpointInput::parse(&json!({"url": "x", "events": []})).is_err());
        // Past the limits: a URL over 2,048 bytes, a description over 512 characters.
        let long_url = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        let fields = |body: Value| -> Vec<String> {
            EndpointInput::parse(&body).unwrap_err().0.into_iter().map(|e| e.field).collect()
        };
        assert_eq!(fields(json!({"url": long_url})), ["url"]);
        let long_text = "é".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert_eq!(
            fields(json!({"url": "https://example.com/", "description": long_text})),
            ["description"]
        );
        let at_limit = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert!(EndpointInput::parse(
            &json!({"url": "https://example.com/", "description": at_limit})
        )
        .is_ok());
    }

    #[test]
    fn events_round_trip_through_the_column() {
        let events = [EventType::ExportFailed, EventType::IngestSucceeded];
        let column = events_column(Some(&events)).unwrap();
        assert_eq!(column, ",export.failed,ingest.succeeded,");
        assert_eq!(parse_events_column(Some(&column)).unwrap(), Some(events.to_vec()));
        assert_eq!(parse_events_column(None).unwrap(), None);
    }

    #[test]
    fn large_objects_go_by_reference() {
        let small = payload(EventType::ExportFailed, 0, &json!({"id": 1}), &json!({"id": 1}));
        let v: Value = serde_json::from_str(&small).unwrap();
        assert_eq!(v["type"], "export.failed");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["id"], 1);
        let big = json!({"id": 2, "text": "x".repeat(MAX_PAYLOAD_BYTES)});
        let sent = payload(EventType::ExportFailed, 0, &big, &json!({"id": 2}));
        assert!(sent.len() < 1000);
        let v: Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(v["data"], json!({"id": 2}));
        assert_eq!(v["truncated"], true);
    }
}
