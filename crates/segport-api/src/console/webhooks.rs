//! The console's webhooks: the sandbox's endpoints (a form adds one and shows its secret once),
//! and an endpoint's page with its delivery log and the buttons to send a test event, enable or
//! disable it, rotate its secret and delete it. Every change goes through the functions the
//! API's routes use.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use segport_model::webhook::{Endpoint, EventType};
use serde_json::{json, Value};

use super::{
    ago, field, form_of, links, offset, render, to_sign_in, utc, viewer, with_csrf_cookie, Nav,
    PageError, PAGE_SIZE,
};
use crate::extract::QueryPairs;
use crate::routes::webhooks::{change_endpoint, create_endpoint, find, queue_test, rotate};
use crate::{ApiError, AppState};

struct EndpointRow {
    id: String,
    url: String,
    description: String,
    events: String,
    enabled: bool,
    disabled_reason: String,
}

impl EndpointRow {
    fn of(e: &Endpoint) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            events: match &e.events {
                None => "all".to_owned(),
                Some(list) => list.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
            },
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct WebhooksPage {
    nav: Nav,
    csrf: String,
    endpoints: Vec<EndpointRow>,
    previous: Option<String>,
    next: Option<String>,
    event_types: Vec<&'static str>,
    /// A new endpoint's id and secret, shown this once.
    created: Option<(String, String)>,
    url: String,
    problems: Vec<(String, String)>,
}

async fn list_page(
    state: &AppState,
    headers: &HeaderMap,
    query: &QueryPairs,
    created: Option<(String, String)>,
    url: String,
    problems: Vec<(String, String)>,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(state, headers).await? else { return Ok(to_sign_in(state)) };
    let start = offset(query, "start")? as u64;
    let list = segport_catalog::ListQuery { limit: PAGE_SIZE, start };
    let found = state.catalog.list_endpoints(&viewer.tenant, &list).await?;
    let (previous, next) = links("/ui/webhooks", start, found.len());
    let page = WebhooksPage {
        nav: viewer.nav(),
        csrf: viewer.csrf.clone(),
        endpoints: found.iter().map(EndpointRow::of).collect(),
        previous,
        next,
        event_types: EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect(),
        created,
        url,
        problems,
    };
    Ok(with_csrf_cookie(&viewer, render(&page)))
}

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    list_page(&state, &headers, &query, None, String::new(), Vec::new()).await
}

/// Adds an endpoint; the answer is the list page showing its secret once (never in a URL).
pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((viewer, fields)) = form_of(&state, &headers, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let get = |name: &str| field(&fields, name);
    let url = get("url").unwrap_or_default();
    let events: Vec<&str> =
        fields.iter().filter(|(k, _)| k == "events").map(|(_, v)| v.as_str()).collect();
    let mut request = json!({"url": url, "description": get("description").unwrap_or_default()});
    if !events.is_empty() {
        request["events"] = json!(events);
    }
    match create_endpoint(&state, &viewer.tenant, &request).await {
        Ok(e) => {
            list_page(&state, &headers, &query, Some((e.id, e.secret)), String::new(), Vec::new())
                .await
        }
        Err(ApiError::Invalid(errors)) => {
            let problems = errors.0.into_iter().map(|e| (e.field, e.message)).collect();
            list_page(&state, &headers, &query, None, url, problems).await
        }
        Err(other) => Err(other.into()),
    }
}

struct DeliveryRow {
    event: String,
    webhook_id: String,
    state: &'static str,
    attempts: i32,
    status: String,
    error: String,
    next: String,
    created: String,
}

#[derive(Template)]
#[template(path = "console/webhook.html")]
struct EndpointPage {
    nav: Nav,
    csrf: String,
    endpoint: EndpointRow,
    created: String,
    /// The secret after a rotation, shown this once.
    secret: Option<String>,
    rotation_until: Option<String>,
    deliveries: Vec<DeliveryRow>,
    previous: Option<String>,
    next: Option<String>,
}

async fn endpoint_page(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    query: &QueryPairs,
    secret: Option<String>,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(state, headers).await? else { return Ok(to_sign_in(state)) };
    let endpoint = find(state, &viewer.tenant, id).await?;
    let start = offset(query, "start")? as u64;
    let list = segport_catalog::ListQuery { limit: PAGE_SIZE, start };
    let log = state.catalog.list_deliveries(&viewer.tenant, id, &list).await?;
    let (previous, next) = links(&format!("/ui/webhooks/{id}"), start, log.len());
    let now = segport_model::time::now_ms();
    let page = EndpointPage {
        nav: viewer.nav(),
        csrf: viewer.csrf.clone(),
        created: utc(endpoint.create_ms),
        rotation_until: endpoint.previous_until_ms.filter(|t| *t > now).map(utc),
        endpoint: EndpointRow::of(&endpoint),
        secret,
        deliveries: log
            .iter()
            .map(|d| DeliveryRow {
                event: d.event_type.clone(),
                webhook_id: d.msg_id.clone(),
                state: d.state.as_str(),
                attempts: d.attempts,
                status: d.last_status.map(|s| s.to_string()).unwrap_or_default(),
                error: d.last_error.clone().unwrap_or_default(),
                next: d.next_attempt_ms.map(|t| ago(now, t)).unwrap_or_default(),
                created: utc(d.created_ms),
            })
            .collect(),
        previous,
        next,
    };
    Ok(with_csrf_cookie(&viewer, render(&page)))
}

pub(super) async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Result<Response, PageError> {
    endpoint_page(&state, &headers, &id, &query, None).await
}

/// One action on an endpoint, from its page's buttons: `test`, `enable`, `disable`, `rotate`
/// or `delete`.
pub(super) async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    query: QueryPairs,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((viewer, _)) = form_of(&state, &headers, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let tenant = &viewer.tenant;
    let back = format!("/ui/webhooks/{id}");
    match action.as_str() {
        "test" => {
            queue_test(&state, tenant, &id).await?;
        }
        "enable" | "disable" => {
            let mut changes = serde_json::Map::new();
            changes.insert("enabled".into(), Value::Bool(action == "enable"));
            change_endpoint(&state, tenant, &id, changes).await?;
        }
        "rotate" => {
            let rotated = rotate(&state, tenant, &id).await?;
            return endpoint_page(&state, &headers, &id, &query, Some(rotated.secret)).await;
        }
        "delete" => {
            if !state.catalog.delete_endpoint(tenant, &id).await? {
                return Err(ApiError::NotFound(format!("webhook endpoint {id:?} not found")).into());
            }
            return Ok(Redirect::to("/ui/webhooks").into_response());
        }
        other => {
            return Err(ApiError::NotFound(format!("no action {other:?} on an endpoint")).into())
        }
    }
    Ok(Redirect::to(&back).into_response())
}
