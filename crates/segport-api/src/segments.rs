//! The segments present in a sandbox's profile store, with their memberships by status, for
//! the console's segment picker. They are summed from the membership indexes' footers (each
//! index records its counts when it is written), through the read pool, once per store commit:
//! a sandbox's answer is kept until its store changes, so a page view reads no index.
//!
//! A count is of recorded memberships: a profile whose fragments in two datasets both carry a
//! membership counts twice, as does one ingested again until compaction merges its versions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use segport_catalog::{StoreKind, StoreState};
use segport_model::Tenant;
use segport_store::index::StatusCounts;
use segport_store::snapshot::FileRef;

use crate::{ApiError, AppState};

/// Sandboxes whose counts are kept; past it the cache starts again.
const SANDBOXES_KEPT: usize = 256;
/// Index files read at once.
const FETCHES_AT_ONCE: usize = 8;

/// Segment ids with their memberships by status, in id order.
pub(crate) type SegmentCounts = Arc<Vec<(String, StatusCounts)>>;

/// Each sandbox's counts with the store commit they were read at.
#[derive(Clone, Default)]
pub struct SegmentCache(Arc<Mutex<HashMap<Tenant, (i64, SegmentCounts)>>>);

impl SegmentCache {
    fn get(&self, tenant: &Tenant, seq: i64) -> Option<SegmentCounts> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.get(tenant).filter(|(at, _)| *at == seq).map(|(_, counts)| counts.clone())
    }

    fn put(&self, tenant: &Tenant, seq: i64, counts: SegmentCounts) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= SANDBOXES_KEPT && !kept.contains_key(tenant) {
            kept.clear();
        }
        kept.insert(tenant.clone(), (seq, counts));
    }
}

/// The segments of `tenant`'s profile store at commit `store`, with their counts.
pub(crate) async fn segment_counts(
    state: &AppState,
    tenant: &Tenant,
    store: &StoreState,
) -> Result<SegmentCounts, ApiError> {
    if let Some(counts) = state.segments.get(tenant, store.commit_seq) {
        return Ok(counts);
    }
    let counts = state
        .reads
        .run(|slot| async move {
            let files =
                state.catalog.snapshot_files(tenant, store.commit_seq, 0..=u32::MAX).await?;
            let wanted = files
                .into_iter()
                .filter(|f| f.kind == StoreKind::Profile)
                .map(|f| {
                    (FileRef { path: f.path, ingest_ms: f.ingest_ms, seq: f.seq }, f.dataset_id)
                })
                .collect();
            let sources = state
                .storage
                .sources(wanted, FETCHES_AT_ONCE)
                .await
                .map_err(|e| ApiError::Internal(Box::new(e)))?;
            slot.blocking(move || {
                let mut summed: BTreeMap<String, StatusCounts> = BTreeMap::new();
                for source in &sources {
                    let Some(index) = source.open_index()? else { continue };
                    for (segment, counts) in index.status_counts()? {
                        let total = summed.entry(segment).or_default();
                        for (status, n) in counts {
                            *total.entry(status).or_default() += n;
                        }
                    }
                }
                Ok::<_, segport_store::StoreError>(summed)
            })
            .await?
            .map_err(|e| ApiError::Internal(Box::new(e)))
        })
        .await?;
    let counts: SegmentCounts = Arc::new(counts.into_iter().collect());
    state.segments.put(tenant, store.commit_seq, counts.clone());
    Ok(counts)
}
