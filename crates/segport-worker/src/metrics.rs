//! What a worker reports to Prometheus: export job durations and sizes, ingest records and
//! failed batches, expired leases and the retries they cause. Registered into the registry
//! the process serves at `/metrics` (see `segport_api::ApiMetrics::registry_mut`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use segport_catalog::TaskKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 50 ms to about 7 hours.
    Histogram::new(exponential_buckets(0.05, 2.0, 20))
}

/// The worker's metrics. Cheap to clone handles; one set per process.
#[derive(Clone)]
pub struct WorkerMetrics {
    job_duration: HistogramFamily<OutcomeLabels>,
    profiles_exported: Histogram,
    ingest_records: Family<OutcomeLabels, Counter>,
    ingest_batches_failed: Counter,
    lease_expiries: Counter,
    task_retries: Family<KindLabels, Counter>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self {
            job_duration: Family::new_with_constructor(duration_histogram),
            // 1 to about 10^9 profiles.
            profiles_exported: Histogram::new(exponential_buckets(1.0, 4.0, 16)),
            ingest_records: Family::default(),
            ingest_batches_failed: Counter::default(),
            lease_expiries: Counter::default(),
            task_retries: Family::default(),
        }
    }
}

fn kind_label(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Export => "export",
        TaskKind::Ingest => "ingest",
    }
}

impl WorkerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "export_job_duration_seconds",
            "Export jobs finished by this worker, from start to commit or failure, by outcome",
            self.job_duration.clone(),
        );
        registry.register(
            "export_profiles_exported",
            "Profiles (output rows) per succeeded export job",
            self.profiles_exported.clone(),
        );
        registry.register(
            "ingest_records",
            "Records of committed ingest batches: kept, or refused as invalid",
            self.ingest_records.clone(),
        );
        registry.register(
            "ingest_batches_failed",
            "Ingest batches that failed (no record landed, or the ingest itself failed)",
            self.ingest_batches_failed.clone(),
        );
        registry.register(
            "lease_expiries",
            "Task leases that expired without a heartbeat (a worker died or stalled)",
            self.lease_expiries.clone(),
        );
        registry.register(
            "task_retries",
            "Tasks queued again for another attempt after their lease expired, by kind",
            self.task_retries.clone(),
        );
    }

    pub(crate) fn export_finished(&self, succeeded: bool, seconds: f64, profiles: Option<u64>) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.job_duration.get_or_create(&OutcomeLabels { outcome }).observe(seconds);
        if let Some(profiles) = profiles {
            self.profiles_exported.observe(profiles as f64);
        }
    }

    pub(crate) fn ingest_committed(&self, kept: u64, refused: u64, failed: bool) {
        self.ingest_records.get_or_create(&OutcomeLabels { outcome: "kept" }).inc_by(kept);
        self.ingest_records.get_or_create(&OutcomeLabels { outcome: "refused" }).inc_by(refused);
        if failed {
            self.ingest_batches_failed.inc();
        }
    }

    pub(crate) fn ingest_failed(&self) {
        self.ingest_batches_failed.inc();
    }

    pub(crate) fn lease_expired(&self, kind: TaskKind, requeued: bool) {
        self.lease_expiries.inc();
        if requeued {
            self.task_retries.get_or_create(&KindLabels { kind: kind_label(kind) }).inc();
        }
    }
}
