//! `segport serve`: the API, the worker, or both, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use segport_api::{AppState, AuthMode, Surface};
use tokio_util::sync::CancellationToken;

use crate::cli::{AuthArg, Role, ServeArgs};
use crate::config::{http_limits, open_catalog, open_serve_storage, worker_config};

/// The auth mode to run with: dev is the default only on loopback, and never allowed elsewhere
/// for a process that serves the API. A worker-only process serves no authenticated route, so it
/// may listen anywhere.
pub fn resolve_auth(
    listen: SocketAddr,
    role: Role,
    requested: Option<AuthArg>,
) -> anyhow::Result<AuthMode> {
    let loopback = listen.ip().is_loopback() || role == Role::Worker;
    match (requested, loopback) {
        (Some(AuthArg::Token), _) => Ok(AuthMode::Token),
        (Some(AuthArg::Dev) | None, true) => Ok(AuthMode::Dev),
        (Some(AuthArg::Dev), false) => anyhow::bail!(
            "dev auth accepts any token and is only allowed on a loopback address, not {listen}; \
             use SEGPORT_AUTH=token with tokens from `segport token create`"
        ),
        (None, false) => anyhow::bail!(
            "refusing to listen on {listen} without SEGPORT_AUTH=token; issue tokens with \
             `segport token create --org ORG`"
        ),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let auth = resolve_auth(args.listen, args.role, args.auth)?;
    // Checked before anything runs: a bad setting stops the start, whatever the role.
    let config = Arc::new(worker_config(&args.worker, args.worker_slots)?);
    // The addresses first: a process that cannot listen must fail before it touches the
    // catalog or starts a worker on it.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics_listener = match args.http.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for metrics"))?,
        ),
        None => None,
    };
    let addresses = segport_webhooks::AddressPolicy::parse(&args.notify.webhook_allow_network)
        .map_err(|e| anyhow::anyhow!("--webhook-allow-network: {e}"))?;
    let pool = crate::config::serve_connections(args.role, config.slots);
    let catalog = open_catalog(&args.catalog, pool).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let dispatcher = segport_webhooks::Dispatcher::new(
        catalog.clone(),
        segport_webhooks::DispatchConfig {
            timeout: args.notify.webhook_timeout,
            retry: segport_webhooks::RetryPolicy {
                first: args.notify.webhook_retry_first,
                window: args.notify.webhook_retry_window,
                ..Default::default()
            },
            addresses,
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    let storage = open_serve_storage(&args).await?;
    let surface = match args.role {
        Role::Api | Role::All => Surface::Full,
        Role::Worker => Surface::OpsOnly,
    };
    let mut metrics = segport_api::ApiMetrics::new();
    if let Some(cache) = storage.cache() {
        cache.metrics().register(metrics.registry_mut());
    }
    let worker = matches!(args.role, Role::Worker | Role::All).then(|| {
        let worker_metrics = segport_worker::WorkerMetrics::default();
        worker_metrics.register(metrics.registry_mut());
        let ctx = segport_worker::Context {
            catalog: catalog.clone(),
            storage: storage.clone(),
            config: config.clone(),
            metrics: worker_metrics,
        };
        let worker = Arc::new(segport_worker::Worker::new(ctx));
        tokio::spawn(worker.run(shutdown.clone(), args.shutdown_grace))
    });

    let (connection_limits, request_limits) = http_limits(&args.http);
    let mut state = AppState::new(catalog.clone(), storage, auth).with_limits(request_limits);
    state.metrics = Arc::new(metrics);
    state.max_upload_bytes = args.max_upload_bytes;
    state.public_url = args.http.public_url.as_deref().map(Into::into);
    // The metrics address, when asked for: served before the API port reports itself ready.
    if let Some(listener) = metrics_listener {
        let bound = listener.local_addr().context("cannot read the metrics address")?;
        tracing::info!(metrics_listen = %bound, "serving per-tenant metrics");
        let app = segport_api::metrics_app(state.clone());
        tokio::spawn(segport_api::server::serve(
            listener,
            app,
            connection_limits,
            shutdown.clone().cancelled_owned(),
        ));
    }
    // The scheduler and the webhook dispatcher run in every process serving the API.
    if surface == Surface::Full {
        tokio::spawn(segport_api::scheduler::run(
            state.clone(),
            args.notify.scheduler_tick,
            shutdown.clone(),
        ));
        tokio::spawn(dispatcher.run(shutdown.clone()));
    }
    let app = segport_api::app(state, surface);
    let bound = listener.local_addr().context("cannot read the bound address")?;
    tracing::info!(
        listen = %bound,
        role = ?args.role,
        auth = ?auth,
        catalog = catalog.backend().as_str(),
        "segport serving"
    );
    let server = segport_api::server::serve(
        listener,
        app,
        connection_limits,
        shutdown.clone().cancelled_owned(),
    );
    let grace = args.shutdown_grace;
    tokio::select! {
        () = server => {}
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace = ?grace, "connections still open after the grace period; exiting"),
    }
    if let Some(worker) = worker {
        // The worker hands running tasks back once the grace period is over.
        if tokio::time::timeout(grace + std::time::Duration::from_secs(5), worker).await.is_err() {
            tracing::warn!("the worker did not stop in time");
        }
    }
    tracing::info!("segport stopped");
    Ok(())
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn wait_for_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_auth_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(resolve_auth(lo, Role::All, None).unwrap(), AuthMode::Dev);
        assert_eq!(resolve_auth(any, Role::Api, Some(AuthArg::Token)).unwrap(), AuthMode::Token);
        assert!(resolve_auth(any, Role::All, None).is_err());
        assert!(resolve_auth(any, Role::Api, Some(AuthArg::Dev)).is_err());
        assert!(resolve_auth("[::1]:80".parse().unwrap(), Role::Api, None).is_ok());
        assert!(resolve_auth(any, Role::Worker, None).is_ok());
    }
}
