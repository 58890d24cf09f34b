//! Turns the command line into opened resources: the catalog (migrated) and the data directory.

use std::sync::Arc;

use anyhow::Context;
use segport_catalog::{redact_url, Catalog, ConnectOptions};
use segport_store::Storage;

use crate::cli::{CatalogArgs, Role};

/// The catalog URL the arguments name: `DATABASE_URL`, or the embedded SQLite file.
pub fn catalog_url(args: &CatalogArgs) -> anyhow::Result<String> {
    match &args.database_url {
        Some(url) if !url.trim().is_empty() => Ok(url.clone()),
        _ => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create the data directory {}", args.data_dir.display())
            })?;
            Ok(format!("sqlite://{}", args.data_dir.join("segport.db").display()))
        }
    }
}

/// Catalog connections a command other than `serve` needs: a few short transactions at a time.
pub const TOOL_CONNECTIONS: u32 = 4;
/// Catalog connections of the API role: requests hold one for a statement or a short
/// transaction, job creates share a few group commits.
pub const API_CONNECTIONS: u32 = 16;

/// Catalog connections a `serve` process of `role` opens at most unless `--db-connections`
/// says otherwise. A worker with `slots` task slots needs one per running task (claims,
/// heartbeats, progress and commits are short, but a slot may be in any of them), plus the
/// task listener, the reaper, maintenance and a spare.
pub fn serve_connections(role: Role, slots: usize) -> u32 {
    let worker = u32::try_from(slots).unwrap_or(u32::MAX).saturating_add(4);
    match role {
        Role::Api => API_CONNECTIONS,
        Role::Worker => worker,
        Role::All => API_CONNECTIONS.saturating_add(worker),
    }
}

/// Opens the catalog and applies its migrations, with at most `--db-connections` connections,
/// else `default_pool` (the role's).
pub async fn open_catalog(
    args: &CatalogArgs,
    default_pool: u32,
) -> anyhow::Result<Arc<dyn Catalog>> {
    let url = catalog_url(args)?;
    let shown = redact_url(&url);
    let max_connections = args.db_connections.unwrap_or(default_pool).max(1);
    let options = ConnectOptions { url, max_connections };
    let catalog = segport_catalog::connect(&options)
        .await
        .with_context(|| format!("cannot open the catalog at {shown}"))?;
    catalog.migrate().await.with_context(|| format!("cannot migrate the catalog at {shown}"))?;
    tracing::debug!(
        catalog = %shown,
        backend = catalog.backend().as_str(),
        max_connections,
        "catalog ready"
    );
    Ok(catalog)
}

/// The storage root the arguments name: `SEGPORT_STORAGE_URL`, or the data directory; checked
/// to answer, so that a process on an unreachable root stops at once, naming it.
pub async fn open_storage(args: &CatalogArgs) -> anyhow::Result<segport_store::Storage> {
    let storage = match &args.storage_url {
        Some(url) => segport_store::Storage::from_url(url),
        None => segport_store::Storage::local(&args.data_dir),
    };
    let storage = storage.context("cannot open the storage root")?;
    storage.check().await?;
    Ok(storage)
}

/// The storage root of `serve`: on a remote root, with the local cache its store files are
/// read through (opened and checked before the process serves anything).
pub async fn open_serve_storage(args: &crate::cli::ServeArgs) -> anyhow::Result<Storage> {
    let storage = open_storage(&args.catalog).await?;
    if storage.is_local() {
        return Ok(storage);
    }
    let dir = args.cache_dir.clone().unwrap_or_else(|| args.catalog.data_dir.join("cache"));
    let capacity = args.cache_size;
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || segport_store::cache::Cache::open(&dir, capacity))
            .await
            .context("opening the cache")?
    };
    let cache = opened.with_context(|| format!("cannot open the cache at {}", dir.display()))?;
    tracing::info!(
        cache_dir = %dir.display(),
        capacity,
        holds = cache.used(),
        "local cache ready"
    );
    Ok(storage.with_cache(Arc::new(cache)))
}

/// The worker settings the arguments name.
pub fn worker_config(
    args: &crate::cli::WorkerArgs,
    slots: usize,
) -> anyhow::Result<segport_worker::WorkerConfig> {
    Ok(segport_worker::WorkerConfig {
        slots: slots.max(1),
        lease: args.lease,
        heartbeat: args.heartbeat,
        poll: args.poll_interval,
        reap_every: args.reap_interval,
        maintain_every: args.maintenance_interval,
        file_grace: args.file_grace,
        retention: args.retention,
        tenant_max_running: args.tenant_max_running,
        export_unit_profiles: args.export_unit_profiles,
        locality_wait: args.locality_wait,
        failpoints: segport_worker::Failpoints::parse(&args.failpoints)
            .map_err(anyhow::Error::msg)?,
        ingest: segport_store::ingest::IngestLimits {
            record: segport_store::limits::RecordLimits {
                max_depth: usize::from(args.max_record_depth),
                max_fields: args.max_record_fields,
                max_schema_fields: args.max_schema_fields,
                max_bytes: args.max_record_bytes,
            },
            ..segport_store::ingest::IngestLimits::default()
        },
        ..segport_worker::WorkerConfig::default()
    })
}

/// The HTTP limits the arguments name: the server's and the router's.
pub fn http_limits(
    args: &crate::cli::HttpArgs,
) -> (segport_api::server::ConnectionLimits, segport_api::RequestLimits) {
    (
        segport_api::server::ConnectionLimits {
            header_read: args.header_timeout,
            idle: args.idle_timeout,
        },
        segport_api::RequestLimits {
            body_idle: args.body_timeout,
            max_in_flight: args.max_in_flight,
            read_slots: args
                .lookup_concurrency
                .map_or_else(|| segport_api::RequestLimits::default().read_slots, usize::from),
            read_deadline: args.lookup_deadline,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_the_connections_it_needs() {
        assert_eq!(serve_connections(Role::Api, 8), 16, "the api has no slots");
        assert_eq!(serve_connections(Role::Worker, 2), 6);
        assert_eq!(serve_connections(Role::Worker, 1), 5);
        assert_eq!(serve_connections(Role::All, 2), 22);
        assert_eq!(serve_connections(Role::Worker, usize::MAX), u32::MAX, "bounded, not wrapped");
    }
}
