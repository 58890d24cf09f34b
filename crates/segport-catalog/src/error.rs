//! Catalog errors, with database errors mapped to what callers can act on in one place.

/// What went wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database cannot be reached (connection refused, pool timeout): a 503, retryable.
    #[error("catalog database is unreachable")]
    Unavailable(#[source] sqlx::Error),
    /// The change contradicts current state (a policy in use, a default that would vanish).
    #[error("{0}")]
    Conflict(String),
    /// A row the catalog wrote could not be read back into its domain type.
    #[error("corrupt catalog row: {0}")]
    Corrupt(String),
    /// The task's lease belongs to another attempt now: its work must not be committed.
    #[error("the task's lease was lost to another attempt")]
    LeaseLost,
    /// A cancel was requested for the job: its output must not be committed.
    #[error("the export job was cancelled")]
    Cancelled,
    /// The union schema changed since the attempt read it.
    #[error("the sandbox schema changed during the ingest")]
    SchemaChanged,
    #[error("invalid catalog configuration: {0}")]
    Config(String),
    #[error("catalog migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("catalog query failed")]
    Database(#[source] sqlx::Error),
}

impl CatalogError {
    /// Whether trying again later may succeed: the database was unreachable (restarting, a
    /// connection reset), or it refused the transaction to break a deadlock or a serialization
    /// conflict. Such an error says nothing about the work that met it.
    pub fn is_transient(&self) -> bool {
        match self {
            CatalogError::Unavailable(_) => true,
            CatalogError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for CatalogError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => CatalogError::Unavailable(err),
            sqlx::Error::Database(ref db)
                if db.code().as_deref().is_some_and(server_unavailable) =>
            {
                CatalogError::Unavailable(err)
            }
            other => CatalogError::Database(other),
        }
    }
}

impl From<serde_json::Error> for CatalogError {
    fn from(err: serde_json::Error) -> Self {
        CatalogError::Corrupt(err.to_string())
    }
}

/// SQLSTATEs with which a PostgreSQL server refuses service rather than the statement: connection
/// exceptions (class 08), shutdown and startup (57P01–57P03), a missing database (3D000) and too
/// many connections (53300).
fn server_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "3D000" | "53300")
}
