//! Store errors. Bad client records are not errors here: they are counted and reported per row
//! (see [`crate::ingest::RecordError`]); these are failures of the store itself.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage operation failed on {path}")]
    Storage {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("invalid storage location {0:?}")]
    Location(String),
    #[error("arrow error while {context}")]
    Arrow {
        context: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("parquet error on {path}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("input file {name} cannot be read: {message}")]
    Input { name: String, message: String },
    #[error("local cache: {0}")]
    Cache(String),
    #[error("schema error: {0}")]
    Schema(String),
    #[error("the task was cancelled")]
    Cancelled,
}

impl StoreError {
    pub fn arrow(context: &'static str) -> impl FnOnce(arrow::error::ArrowError) -> Self {
        move |source| StoreError::Arrow { context, source }
    }

    pub(crate) fn storage(
        path: &object_store::path::Path,
    ) -> impl FnOnce(object_store::Error) -> Self + '_ {
        move |source| StoreError::Storage { path: path.to_string(), source }
    }

    pub(crate) fn parquet(
        path: &object_store::path::Path,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> Self + '_ {
        move |source| StoreError::Parquet { path: path.to_string(), source }
    }
}
