//! Previewing an export (a segport addition): `POST /segport/preview/export` takes an export
//! job body, checks it exactly as a create does, and evaluates it now, in the api process's read
//! pool, over the store's current commit: how many profiles the job would export (per
//! destination batch: one per segment entry with `segmentPerBatch`) and its first rows. No job
//! is created and no file written.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use segport_engine::{
    job::export_plan, output_rows, projections, run_partition, EngineError, KeyRange,
    PartitionInput, Progress,
};
use segport_model::time::now_ms;
use segport_model::{Tenant, ValidationErrors};
use segport_store::schema::UnionSchema;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::jobs::check_create;
use crate::auth::Authenticated;
use crate::extract::{JsonBody, QueryPairs};
use crate::{ApiError, AppState};

/// Rows a preview answers unless asked otherwise, and at most.
const DEFAULT_ROWS: u64 = 10;
const MAX_ROWS: u64 = 100;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(preview))
}

#[utoipa::path(post, path = "/segport/preview/export", operation_id = "previewExport", tag = "export jobs",
    request_body(content = crate::openapi::ExportJobCreate, content_type = "application/json"),
    params(("rows" = Option<u64>, Query, description = "First rows to answer, 0 to 100 (default 10).")),
    responses(
        (status = 200, description = "{totalExportedProfileCounter, batches: [{segmentId?, segmentNs?, count}], rows, warnings, commitSeq}: what the job would export now."),
        (status = 400, description = "The body, as a create would refuse it."),
        (status = 503, description = "The read pool is full; retry."),
        (status = 504, description = "The preview ran past its deadline."),
    ))]
async fn preview(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    query: QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let rows = query.int_in("rows", DEFAULT_ROWS, 0, MAX_ROWS, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    Ok(Json(preview_of(&state, &tenant, &headers, &body, rows).await?))
}

/// What the job `body` would export now in `tenant`'s sandbox: its counts and first `rows`
/// rows (the preview API's answer, and the console's).
pub(crate) async fn preview_of(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: &Value,
    rows: u64,
) -> Result<Value, ApiError> {
    let now = now_ms();
    // The job a create would insert (its batches allocated but never stored).
    let job = check_create(state, tenant, headers, body, now).await?.into_job(String::new(), now);
    let (spec, policy, warnings) = (job.spec, job.merge_policy, job.warnings);
    let entries: Vec<Value> = match (&spec.filter.segments, spec.destination.segment_per_batch) {
        (Some(list), true) => list
            .iter()
            .map(|s| json!({"segmentId": s.segment_id, "segmentNs": s.segment_ns}))
            .collect(),
        _ => vec![json!({})],
    };
    let tenant_ref = tenant;
    let state_ref = state;
    let evaluated = state
        .reads
        .run(|slot| async move {
            let Some(store) = state_ref.catalog.find_store_state(tenant_ref).await? else {
                return Ok(None);
            };
            let files = state_ref
                .catalog
                .snapshot_files(tenant_ref, store.commit_seq, 0..=u32::MAX)
                .await?;
            let schema = |text: &str| {
                UnionSchema::from_json(text).map_err(|e| {
                    ApiError::Internal(format!("the sandbox schema is unreadable: {e}").into())
                })
            };
            let plan = export_plan(
                &spec,
                &policy,
                schema(&store.profile_schema)?,
                schema(&store.event_schema)?,
            );
            let inputs =
                crate::reads::open_inputs(&state_ref.storage, &files, &KeyRange::all(), false)
                    .await?;
            let cancel = slot.cancel_flag();
            let limit = usize::try_from(rows).unwrap_or(usize::MAX);
            let evaluated = slot.blocking(move || evaluate(&plan, &inputs, limit, &cancel)).await?;
            evaluated.map(|e| Some((store.commit_seq, e))).map_err(|e| match e {
                EngineError::Cancelled => ApiError::DeadlineExceeded(
                    "the preview took longer than its deadline".to_owned(),
                ),
                e => ApiError::Internal(Box::new(e)),
            })
        })
        .await?;
    let (commit_seq, Evaluated { counts, sample }) =
        evaluated.unwrap_or((0, Evaluated { counts: vec![0; entries.len()], sample: Vec::new() }));
    let batches: Vec<Value> = entries
        .into_iter()
        .zip(&counts)
        .map(|(mut entry, count)| {
            entry["count"] = json!(count);
            entry
        })
        .collect();
    Ok(json!({
        "totalExportedProfileCounter": counts.iter().sum::<u64>(),
        "batches": batches,
        "rows": sample,
        "warnings": warnings,
        "commitSeq": commit_seq,
    }))
}

/// What a preview found: rows per destination batch, and the first rows of the first batch.
struct Evaluated {
    counts: Vec<u64>,
    sample: Vec<Value>,
}

/// Runs the plan over every partition, one after the other (a read holds one slot of the
/// pool), keeping counts and the first `limit` rows of the first batch.
fn evaluate(
    plan: &segport_engine::ExportPlan,
    inputs: &[PartitionInput],
    limit: usize,
    cancel: &Arc<AtomicBool>,
) -> Result<Evaluated, EngineError> {
    let projections = projections(plan);
    let progress = Progress::default();
    let mut counts = vec![0u64; plan.batch_count()];
    let mut sample = Vec::new();
    for input in inputs {
        let output = run_partition(plan, &projections, input, &progress, cancel)?;
        for (b, file) in output.files.iter().enumerate() {
            let Some((bytes, rows)) = file else { continue };
            if let Some(count) = counts.get_mut(b) {
                *count += rows;
            }
            if b == 0 && sample.len() < limit {
                sample.extend(output_rows(bytes, limit - sample.len())?);
            }
        }
    }
    Ok(Evaluated { counts, sample })
}
