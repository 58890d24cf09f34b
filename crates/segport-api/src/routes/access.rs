//! AEP's Real-Time Customer Profile access API, `GET /data/core/ups/access/entities`: one
//! profile by its identity, under a merge policy, and one profile's events. Both read the
//! store by key in the api process (the key's partition, a binary search in each of its files)
//! through the bounded look-up pool, never a scan.

use axum::extract::State;
use axum::Json;
use segport_catalog::StoreState;
use segport_engine::lookup::{look_up, Event, Profile};
use segport_engine::{ExportPlan, KeyRange, PartitionInput, Precedence};
use segport_model::fields::FieldList;
use segport_model::merge_policy::{parse_policy_id, MergePolicy};
use segport_model::{Tenant, ValidationErrors};
use segport_store::schema::UnionSchema;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::QueryPairs;
use crate::{ApiError, AppState};

const PROFILE_SCHEMA: &str = "_xdm.context.profile";
const EVENT_SCHEMA: &str = "_xdm.context.experienceevent";
const DEFAULT_EVENT_LIMIT: u64 = 1000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(entities))
}

#[utoipa::path(get, path = "/data/core/ups/access/entities", operation_id = "retrieveEntity", tag = "profile access",
    params(
        ("schema.name" = String, Query, description = "_xdm.context.profile for a profile, _xdm.context.experienceevent for a profile's events."),
        ("entityId" = Option<String>, Query, description = "Profile: the id of its primary identity."),
        ("entityIdNS" = Option<String>, Query, description = "Profile: the namespace of that identity."),
        ("mergePolicyId" = Option<String>, Query, description = "The merge policy; the sandbox's default when absent."),
        ("fields" = Option<String>, Query, description = "Comma-separated fields to return; every field when absent."),
        ("relatedSchema.name" = Option<String>, Query, description = "Events: _xdm.context.profile."),
        ("relatedEntityId" = Option<String>, Query, description = "Events: the profile's primary identity id."),
        ("relatedEntityIdNS" = Option<String>, Query, description = "Events: its namespace."),
        ("startTime" = Option<i64>, Query, description = "Events: timestamps from this (ms, included)."),
        ("endTime" = Option<i64>, Query, description = "Events: timestamps before this (ms, excluded)."),
        ("limit" = Option<u64>, Query, description = "Events: at most this many, 1 to 1000 (default 1000)."),
        ("orderby" = Option<String>, Query, description = "Events: +timestamp (default) or -timestamp."),
    ),
    responses(
        (status = 200, description = "A profile: a map from its key to {entityId, sources, mergePolicy, entity, lastModifiedAt}. Events: {_page, children, _links}."),
        (status = 404, description = "No profile with that identity."),
        (status = 503, description = "The look-up pool is full; retry."),
        (status = 504, description = "The look-up ran past its deadline."),
    ))]
async fn entities(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let schema = query.get("schema.name").map(str::trim).unwrap_or_default();
    match schema {
        PROFILE_SCHEMA => profile(&state, &tenant, &query, errors).await,
        EVENT_SCHEMA => events(&state, &tenant, &query, errors).await,
        "" => {
            errors.push("schema.name", format!("required: {PROFILE_SCHEMA} or {EVENT_SCHEMA}"));
            Err(ApiError::Invalid(errors))
        }
        other => {
            errors.push(
                "schema.name",
                format!(
                    "{other:?} is not supported: segport holds profiles ({PROFILE_SCHEMA}) and \
                     their events ({EVENT_SCHEMA})"
                ),
            );
            Err(ApiError::Invalid(errors))
        }
    }
}

/// `schema.name=_xdm.context.profile`.
async fn profile(
    state: &AppState,
    tenant: &Tenant,
    query: &QueryPairs,
    mut errors: ValidationErrors,
) -> Result<Json<Value>, ApiError> {
    let id = required(query, "entityId", &mut errors);
    let ns = required(query, "entityIdNS", &mut errors);
    let fields = fields(query, &mut errors);
    let store = state.catalog.find_store_state(tenant).await?;
    let policy =
        merge_policy(state, tenant, query.get("mergePolicyId"), &store, &mut errors).await?;
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let (Some(id), Some(ns), Some(fields)) = (id, ns, fields) else {
        return Err(ApiError::Internal("a look-up passed validation incomplete".into()));
    };
    // A sandbox that holds nothing has no default policy either: no such profile.
    let (Some(store), Some(policy)) = (store, policy) else {
        return Err(not_found(&ns, &id));
    };
    let key = format!("{ns}:{id}");
    let found = read(state, tenant, store, &key, &policy, fields, false).await?;
    let Some((profile, _)) = found else {
        return Err(not_found(&ns, &id));
    };
    let Profile { entity, sources, last_modified_ms } = profile;
    let mut answer = Map::new();
    answer.insert(
        key.clone(),
        json!({
            "entityId": key,
            "sources": sources,
            "mergePolicy": {"id": policy.id.to_string()},
            "entity": entity,
            "lastModifiedAt": rfc3339(last_modified_ms),
        }),
    );
    Ok(Json(Value::Object(answer)))
}

/// `schema.name=_xdm.context.experienceevent` with `relatedSchema.name=_xdm.context.profile`.
async fn events(
    state: &AppState,
    tenant: &Tenant,
    query: &QueryPairs,
    mut errors: ValidationErrors,
) -> Result<Json<Value>, ApiError> {
    match query.get("relatedSchema.name").map(str::trim) {
        Some(PROFILE_SCHEMA) => {}
        Some(other) => errors.push(
            "relatedSchema.name",
            format!(
                "{other:?} is not supported: events are read by their profile ({PROFILE_SCHEMA})"
            ),
        ),
        None => errors.push("relatedSchema.name", format!("required: {PROFILE_SCHEMA}")),
    }
    let id = required(query, "relatedEntityId", &mut errors);
    let ns = required(query, "relatedEntityIdNS", &mut errors);
    let start = time(query, "startTime", &mut errors);
    let end = time(query, "endTime", &mut errors);
    let limit = query.int_in("limit", DEFAULT_EVENT_LIMIT, 1, DEFAULT_EVENT_LIMIT, &mut errors);
    let descending = match query.get("orderby").map(str::trim) {
        None | Some("+timestamp" | "timestamp") => false,
        Some("-timestamp") => true,
        Some(other) => {
            errors.push("orderby", format!("{other:?} is neither +timestamp nor -timestamp"));
            false
        }
    };
    let store = state.catalog.find_store_state(tenant).await?;
    let policy =
        merge_policy(state, tenant, query.get("mergePolicyId"), &store, &mut errors).await?;
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let (Some(id), Some(ns)) = (id, ns) else {
        return Err(ApiError::Internal("a look-up passed validation incomplete".into()));
    };
    let (Some(store), Some(policy)) = (store, policy) else {
        return Err(not_found(&ns, &id));
    };
    let key = format!("{ns}:{id}");
    let found = read(state, tenant, store, &key, &policy, FieldList::default(), true).await?;
    let Some((_, mut all)) = found else {
        return Err(not_found(&ns, &id));
    };
    // An event without a timestamp counts as at 0.
    let inside = |e: &Event| {
        let t = e.timestamp_ms.unwrap_or(0);
        start.is_none_or(|s| t >= s) && end.is_none_or(|x| t < x)
    };
    all.retain(inside);
    if descending {
        all.reverse();
    }
    let page_len = page_length(&all, usize::try_from(limit).unwrap_or(usize::MAX));
    let page: Vec<Value> = all[..page_len]
        .iter()
        .map(|e| {
            json!({
                "relatedEntityId": key,
                "entityId": e.id,
                "timestamp": e.timestamp_ms,
                "entity": e.entity,
                "lastModifiedAt": rfc3339(e.ingest_ms),
            })
        })
        .collect();
    // The next page starts past the last timestamp given (a page never splits the events of
    // one timestamp, so none is skipped or repeated).
    let next = (page_len < all.len()).then(|| {
        let last = all[page_len - 1].timestamp_ms.unwrap_or(0);
        let (start, end) = if descending { (start, Some(last)) } else { (Some(last + 1), end) };
        let mut href = format!(
            "/data/core/ups/access/entities?schema.name={EVENT_SCHEMA}&relatedSchema.name=\
             {PROFILE_SCHEMA}&relatedEntityId={}&relatedEntityIdNS={}&limit={limit}&orderby={}",
            encode(&id),
            encode(&ns),
            if descending { "-timestamp" } else { "%2Btimestamp" },
        );
        for (name, value) in [("startTime", start), ("endTime", end)] {
            if let Some(v) = value {
                href.push_str(&format!("&{name}={v}"));
            }
        }
        if let Some(p) = query.get("mergePolicyId") {
            href.push_str(&format!("&mergePolicyId={}", encode(p)));
        }
        (last, href)
    });
    Ok(Json(json!({
        "_page": {
            "orderby": if descending { "-timestamp" } else { "+timestamp" },
            "count": page.len(),
            "next": next.as_ref().map(|(last, _)| last.to_string()).unwrap_or_default(),
        },
        "children": page,
        "_links": {"next": {"href": next.map(|(_, href)| href).unwrap_or_default()}},
    })))
}

/// How many of `events` (ordered by timestamp) the first page holds: `limit`, or more when
/// cutting there would split the events of one timestamp.
fn page_length(events: &[Event], limit: usize) -> usize {
    let mut n = limit.min(events.len());
    while n > 0 && n < events.len() && events[n].timestamp_ms == events[n - 1].timestamp_ms {
        n += 1;
    }
    n
}

/// A profile and its events by its primary identity under merge policy `policy_id` (the
/// sandbox's default when `None`), for the console: `None` when there is no such profile.
pub(crate) async fn profile_with_events(
    state: &AppState,
    tenant: &Tenant,
    ns: &str,
    id: &str,
    policy_id: Option<&str>,
) -> Result<Option<(MergePolicy, Profile, Vec<Event>)>, ApiError> {
    let mut errors = ValidationErrors::default();
    let store = state.catalog.find_store_state(tenant).await?;
    let policy = merge_policy(state, tenant, policy_id, &store, &mut errors).await?;
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let (Some(store), Some(policy)) = (store, policy) else { return Ok(None) };
    let key = format!("{ns}:{id}");
    let found = read(state, tenant, store, &key, &policy, FieldList::default(), true).await?;
    Ok(found.map(|(profile, events)| (policy, profile, events)))
}

/// Reads the profile of `key` (and its events) from the store, in the look-up pool.
async fn read(
    state: &AppState,
    tenant: &Tenant,
    store: StoreState,
    key: &str,
    policy: &MergePolicy,
    fields: FieldList,
    with_events: bool,
) -> Result<Option<(Profile, Vec<Event>)>, ApiError> {
    state
        .reads
        .run(|slot| async move {
            let partition = segport_store::ingest::partition_of(key, store.partitions);
            let files = state
                .reads
                .partition_files(state.catalog.as_ref(), tenant, store.commit_seq, partition)
                .await?;
            let schema = |text: &str| {
                UnionSchema::from_json(text).map_err(|e| {
                    ApiError::Internal(format!("the sandbox schema is unreadable: {e}").into())
                })
            };
            let plan = ExportPlan {
                segments: None,
                from_ingest_ms: None,
                empty_profiles: true,
                fields: fields.paths().iter().map(|p| p.segments().to_vec()).collect(),
                events: None,
                per_segment: false,
                precedence: Precedence::of(policy),
                profile_schema: schema(&store.profile_schema)?,
                event_schema: schema(&store.event_schema)?,
            };
            // Exactly this key: the smallest string above it is the key with a NUL appended.
            let keys = KeyRange { from: Some(key.to_owned()), to: Some(format!("{key}\0")) };
            let input = crate::reads::open_inputs(&state.storage, &files, &keys, true)
                .await?
                .pop()
                .unwrap_or(PartitionInput {
                    partition,
                    profiles: Vec::new(),
                    events: Vec::new(),
                    keys,
                });
            let key = key.to_owned();
            slot.blocking(move || look_up(&plan, &input, &key, with_events))
                .await?
                .map_err(|e| ApiError::Internal(Box::new(e)))
        })
        .await
}

fn required(query: &QueryPairs, name: &str, errors: &mut ValidationErrors) -> Option<String> {
    match query.get(name).map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.len() <= 1024 => Some(v.to_owned()),
        Some(_) => {
            errors.push(name, "longer than 1024 bytes");
            None
        }
        None => {
            errors.push(name, "required");
            None
        }
    }
}

fn fields(query: &QueryPairs, errors: &mut ValidationErrors) -> Option<FieldList> {
    match query.get("fields") {
        None => Some(FieldList::default()),
        Some(raw) => FieldList::parse(raw).map_err(|m| errors.push("fields", m)).ok(),
    }
}

fn time(query: &QueryPairs, name: &str, errors: &mut ValidationErrors) -> Option<i64> {
    let raw = query.get(name)?.trim();
    match raw.parse::<i64>() {
        Ok(ms) if ms >= 0 => Some(ms),
        _ => {
            errors.push(name, format!("{raw:?} is not a time in epoch milliseconds"));
            None
        }
    }
}

/// The merge policy named, or the sandbox's default (`store`: the sandbox's, if it has one).
async fn merge_policy(
    state: &AppState,
    tenant: &Tenant,
    requested: Option<&str>,
    store: &Option<StoreState>,
    errors: &mut ValidationErrors,
) -> Result<Option<MergePolicy>, ApiError> {
    let Some(raw) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        let found = state.catalog.default_merge_policy(tenant).await?;
        if found.is_none() && store.is_some() {
            errors.push("mergePolicyId", "the sandbox has no default merge policy; name one");
        }
        return Ok(found);
    };
    let found = match parse_policy_id(raw) {
        Ok(id) => state.catalog.get_merge_policy(tenant, id).await?,
        Err(_) => None,
    };
    if found.is_none() {
        errors.push(
            "mergePolicyId",
            format!("no merge policy {raw:?} in sandbox {}", tenant.sandbox),
        );
    }
    Ok(found)
}

fn not_found(ns: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no profile with primary identity {id:?} in namespace {ns:?} (look-ups go by a profile's \
         primary identity, its key)"
    ))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}
