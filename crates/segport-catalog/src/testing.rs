//! Throwaway catalogs for tests: a fresh PostgreSQL database or SQLite file per call, migrated,
//! and dropped again when the guard goes out of scope.
//!
//! PostgreSQL is found through `SEGPORT_TEST_DATABASE_URL`, then `DATABASE_URL`, then
//! `postgres://postgres@127.0.0.1:5432/postgres`. A test that cannot reach it fails; it is never
//! skipped (the README's test command provisions a server first).

use std::path::PathBuf;
use std::sync::Arc;

use crate::{connect, Backend, Catalog, ConnectOptions};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server URL tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("SEGPORT_TEST_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres")))
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
}

/// A migrated, empty catalog that is removed on drop.
pub struct TestCatalog {
    pub catalog: Arc<dyn Catalog>,
    /// The URL of this catalog, for processes started by the test.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String, database: String },
    Sqlite { dir: PathBuf },
}

impl TestCatalog {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::postgres().await,
            Backend::Sqlite => Self::sqlite().await,
        }
    }

    pub async fn postgres() -> Self {
        let admin_url = postgres_admin_url();
        let database = format!("segport_test_{}", segport_model::ids::new_uuid().simple());
        let admin = connect_admin(&admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("creating test database on {admin_url}: {e}"));
        admin.close().await;
        let url = with_database(&admin_url, &database);
        let catalog = open(&url).await;
        Self { catalog, url, cleanup: Cleanup::Postgres { admin_url, database } }
    }

    pub async fn sqlite() -> Self {
        let dir =
            std::env::temp_dir().join(format!("segport-test-{}", segport_model::ids::new_uuid()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
        let url = format!("sqlite://{}", dir.join("catalog.db").display());
        let catalog = open(&url).await;
        Self { catalog, url, cleanup: Cleanup::Sqlite { dir } }
    }
}

async fn connect_admin(admin_url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(admin_url).await.unwrap_or_else(
        |e| {
            panic!(
                "PostgreSQL is not reachable at {}: {e}; run the README's test command, which \
                 starts one, or set SEGPORT_TEST_DATABASE_URL",
                crate::redact_url(admin_url)
            )
        },
    )
}

async fn open(url: &str) -> Arc<dyn Catalog> {
    let catalog = connect(&ConnectOptions::new(url))
        .await
        .unwrap_or_else(|e| panic!("opening test catalog {url}: {e}"));
    catalog.migrate().await.unwrap_or_else(|e| panic!("migrating test catalog {url}: {e:?}"));
    catalog
}

/// Replaces the database name (the path) of a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

impl Drop for TestCatalog {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, database } => {
                // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
                // thread with its own runtime removes the database.
                let (admin_url, database) = (admin_url.clone(), database.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build()
                    else {
                        return;
                    };
                    rt.block_on(async {
                        if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                            ))
                            .execute(&admin)
                            .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_database() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "t"), "postgres://u@h:5432/t");
        assert_eq!(with_database("postgres://u@h", "t"), "postgres://u@h/t");
        assert_eq!(
            with_database("postgres://h/x?sslmode=disable", "t"),
            "postgres://h/t?sslmode=disable"
        );
    }
}
