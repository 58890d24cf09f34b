//! The OpenAPI 3 description of what a process serves, served at `/openapi.json`.
//!
//! The router and the description are built together from the handlers' `#[utoipa::path]`
//! annotations (utoipa-axum's `routes!` registers a handler and documents it in one step), so a
//! route cannot be served undocumented nor documented unserved. Response bodies are the wire
//! types the handlers return (`ExportJob`, `MergePolicy`, the error bodies of [`crate::error`]);
//! request bodies, which the handlers validate from raw JSON to name every invalid field, are
//! described by the request types below.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::{Extension, Json, Router};
use segport_model::job::{ExportJob, SegmentStatus};
use segport_model::merge_policy::{AttributeMerge, IdentityGraph, PolicySchema};
use segport_model::{fields::FieldList, time::Rfc3339, DatasetId, FieldError};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder, Type,
};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppState, Surface};

/// Where AEP serves export jobs; segport serves them there and at `/export/jobs`.
pub(crate) const AEP_JOBS_PREFIX: &str = "/data/core/ups";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "segport",
        description = "A self-hosted export job engine, wire-compatible with the Adobe Experience \
                       Platform Segmentation API's /export/jobs, with the Catalog, Batch Ingestion, \
                       Data Access and merge-policy endpoints it works with."
    ),
    components(schemas(ErrorBody, ServiceErrorBody, GatewayErrorBody, ErrorReport, FieldError))
)]
struct ApiDoc;

/// The router of `surface` and its description.
pub(crate) fn build(surface: Surface) -> (Router<AppState>, Arc<OpenApi>) {
    let api = match surface {
        Surface::Full => crate::routes::api_routes(),
        Surface::OpsOnly => OpenApiRouter::new(),
    };
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .merge(crate::routes::ops::routes())
        .routes(routes!(openapi_json))
        .split_for_parts();
    finish(&mut doc);
    let doc = Arc::new(doc);
    (router.layer(Extension(doc.clone())), doc)
}

/// This description.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 description of this process.", body = Object)))]
async fn openapi_json(Extension(doc): Extension<Arc<OpenApi>>) -> Json<Arc<OpenApi>> {
    Json(doc)
}

/// Paths served without authentication.
const OPEN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// What the annotations leave to one place: the tenant headers and the security of every
/// tenant operation, the error answers every operation may give, distinct operation ids for
/// the AEP-path copies of the job routes, and OpenAPI's spelling of the upload's wildcard.
fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
    );
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        let open = OPEN_PATHS.contains(&path.as_str());
        let aep = path.starts_with(&format!("{AEP_JOBS_PREFIX}/export/jobs"));
        for operation in operations(&mut item) {
            add_errors(operation);
            if aep {
                if let Some(id) = operation.operation_id.as_mut() {
                    *id = format!("{id}Aep");
                }
            }
            if !open {
                add_tenant_headers(operation);
            }
        }
        // axum's `{*name}` (the rest of the path) is a plain `{name}` in OpenAPI.
        doc.paths.paths.insert(path.replace("{*", "{"), item);
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_errors(operation: &mut Operation) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build()
    };
    let responses = &mut operation.responses.responses;
    responses
        .entry("4XX".to_owned())
        .or_insert_with(|| RefOr::T(error("The request cannot be served as sent.")));
    responses
        .entry("503".to_owned())
        .or_insert_with(|| RefOr::T(error("The catalog database is unreachable; retry later.")));
}

fn add_tenant_headers(operation: &mut Operation) {
    let header = |name: &str, required: Required, description: &str, pattern: Option<&str>| {
        let mut schema = ObjectBuilder::new().schema_type(Type::String);
        if let Some(pattern) = pattern {
            schema = schema.pattern(Some(pattern));
        }
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(required)
            .description(Some(description))
            .schema(Some(schema.build()))
            .build()
    };
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.push(header(
        "x-gw-ims-org-id",
        Required::True,
        "The IMS organisation.",
        Some("^[A-Za-z0-9@._-]{1,128}$"),
    ));
    parameters.push(header(
        "x-sandbox-name",
        Required::True,
        "The sandbox (created on first use).",
        Some("^[a-z0-9-]{1,64}$"),
    ));
    parameters.push(header(
        "x-request-id",
        Required::False,
        "Echoed as requestId; a new UUID when absent.",
        None,
    ));
    let both = utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())
        .add("apiKey", Vec::<String>::new());
    operation.security = Some(vec![both]);
}

/// Every error answer: the service's own shape, or AEP's gateway shape for header and token
/// errors (docs/api.md, Errors).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // A description only: the two shapes are built as the types below.
pub(crate) enum ErrorBody {
    Service(ServiceErrorBody),
    Gateway(GatewayErrorBody),
}

/// A service error: `type` names the code and status, `title` says what is wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub request_id: String,
    pub report: ErrorReport,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorReport {
    /// Every invalid field of a 400, else empty.
    pub details: Vec<FieldError>,
}

/// A header or token error, as AEP's gateway answers it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GatewayErrorBody {
    pub error_code: String,
    pub message: String,
}

/// `POST /export/jobs`: defaults are filled in and echoed in the job. The keys are those of
/// `segport_model::job::EXPORT_JOB_KEYS`, no others (a test holds the two together): the
/// read-only keys of AEP's job object are accepted and have no effect.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExportJobCreate {
    destination: DestinationCreate,
    schema: SchemaNameCreate,
    fields: Option<FieldList>,
    filter: Option<FilterCreate>,
    additional_fields: Option<AdditionalFieldsCreate>,
    merge_policy: Option<MergePolicyChoice>,
    evaluation_info: Option<EvaluationInfo>,
    /// Set by the server; accepted without effect.
    id: Option<Value>,
    /// Set by the server; accepted without effect.
    job_type: Option<Value>,
    /// Set by the server; accepted without effect.
    ims_org_id: Option<Value>,
    /// Set by the server; accepted without effect.
    status: Option<Value>,
    /// Set by the server; accepted without effect.
    profile_instance_id: Option<Value>,
    /// Set by the server; accepted without effect.
    errors: Option<Value>,
    /// Set by the server; accepted without effect.
    metrics: Option<Value>,
    /// Set by the server; accepted without effect.
    compute_gateway_job_id: Option<Value>,
    /// Set by the server; accepted without effect.
    creation_time: Option<Value>,
    /// Set by the server; accepted without effect.
    update_time: Option<Value>,
    /// Set by the server; accepted without effect.
    request_id: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationCreate {
    dataset_id: DatasetId,
    /// An alias of `datasetId`.
    data_set_id: Option<DatasetId>,
    segment_per_batch: Option<bool>,
    /// Set by the server; accepted without effect.
    batch_id: Option<Value>,
    /// Set by the server; accepted without effect.
    batches: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SchemaNameCreate {
    /// `_xdm.context.profile`.
    name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilterCreate {
    segments: Option<Vec<SegmentCreate>>,
    segment_qualification_time: Option<WindowCreate>,
    from_ingest_timestamp: Option<Rfc3339>,
    empty_profiles: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SegmentCreate {
    segment_id: String,
    /// Default `ups`.
    segment_ns: Option<String>,
    /// Default `["realized", "existing"]`.
    status: Option<Vec<SegmentStatus>>,
}

/// Inclusive bounds, each optional.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WindowCreate {
    start_time: Option<Rfc3339>,
    end_time: Option<Rfc3339>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdditionalFieldsCreate {
    event_list: Option<EventListCreate>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EventListCreate {
    /// Empty or absent: every event field.
    fields: Option<FieldList>,
    filter: Option<EventFilterCreate>,
}

/// Exclusive bounds, each optional.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EventFilterCreate {
    from_ingest_timestamp: Option<Rfc3339>,
    to_ingest_timestamp: Option<Rfc3339>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MergePolicyChoice {
    id: String,
    /// Absent: the latest version. A whole number (`1.0` is accepted).
    version: Option<f64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EvaluationInfo {
    /// `true` is refused until segment evaluation exists.
    segmentation: Option<bool>,
}

/// A page of `GET /export/jobs`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExportJobList {
    records: Vec<ExportJob>,
    page: ListPage,
    link: ListLink,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    sort_field: String,
    sort: String,
    page_offset: String,
    page_size: u64,
}

#[derive(Serialize, ToSchema)]
struct ListLink {
    /// The next page, or `""` on the last.
    next: String,
}

/// `DELETE /export/jobs/{id}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct CancelAnswer {
    status: bool,
    message: String,
}

/// `POST /dataSets`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DatasetCreate {
    name: String,
    schema_ref: SchemaRefBody,
    description: Option<String>,
    /// E.g. `{"unifiedProfile": ["enabled:true"], "segport:class": ["export"]}`.
    tags: Option<BTreeMap<String, Vec<String>>>,
}

/// One JSON Patch operation on a dataset.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonPatchOp {
    /// `add`, `replace` or `remove`.
    op: PatchOpKind,
    /// The path to change, e.g. `/tags/unifiedProfile` or `/identityGraph.type`.
    path: String,
    /// For `add` and `replace`.
    value: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // A description only.
enum PatchOpKind {
    Add,
    Replace,
    Remove,
}

/// A dataset patch as a plain object: each field given replaces the dataset's (tags key by
/// key).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatasetPatch {
    name: Option<String>,
    description: Option<String>,
    tags: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SchemaRefBody {
    id: String,
    content_type: Option<String>,
}

/// `POST /data/foundation/import/batches`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IngestBatchCreate {
    dataset_id: DatasetId,
    input_format: InputFormat,
}

#[derive(Serialize, ToSchema)]
struct InputFormat {
    /// `json` or `parquet`.
    format: String,
}

/// The body of a merge policy create, replace or patch.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MergePolicyWrite {
    name: String,
    schema: PolicySchema,
    identity_graph: IdentityGraph,
    attribute_merge: AttributeMerge,
    is_active_on_edge: Option<bool>,
    default: Option<bool>,
}

/// `POST /data/core/ups/config/schedules`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleCreate {
    /// The schedule's name.
    name: String,
    /// `export` (`batch_segmentation` is refused until segport evaluates segments).
    #[serde(rename = "type")]
    kind: String,
    properties: ScheduleProperties,
    /// A Quartz cron expression in UTC, 6 or 7 fields: `0 30 13 * * ?` is every day at 13:30.
    /// More than one run a day is allowed (a segport extension).
    schedule: String,
    /// `active` or `inactive` (the default).
    state: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScheduleProperties {
    /// The export job body each due time creates, as `POST /export/jobs` takes it.
    export_job: ExportJobCreate,
    /// Each run exports only profiles updated after the previous successful run's snapshot.
    delta: Option<bool>,
}

/// A schedule as answered: AEP's fields, then segport's (times in ms since the epoch).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleAnswer {
    id: String,
    ims_org_id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    properties: ScheduleProperties,
    schedule: String,
    state: String,
    /// Seconds since the epoch.
    create_epoch: i64,
    update_epoch: i64,
    next_due_time: Option<i64>,
    last_due_time: Option<i64>,
    last_job_id: Option<i64>,
    /// Due times skipped because the previous run was still in flight.
    missed_count: i64,
}

/// A page of schedules.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleList {
    #[serde(rename = "_page")]
    page: SchedulePage,
    children: Vec<ScheduleAnswer>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SchedulePage {
    total_count: u64,
    page_size: u64,
    /// The `start` of the next page, when there is one.
    next: Option<String>,
}

/// The body of a webhook endpoint create or change.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookEndpointWrite {
    /// `https://…` (or `http://…`); private, loopback and link-local addresses are refused at
    /// delivery unless the operator allows them.
    url: String,
    description: Option<String>,
    /// The event types sent (`export.succeeded`, `export.failed`, `export.cancelled`,
    /// `ingest.succeeded`, `ingest.failed`, `schedule.missed`); leave out for all.
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}
