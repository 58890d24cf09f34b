//! Why an evaluation stops: at the bottom of the engine, so that every stage can say it.

/// Why an evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading the store failed (`STORE_READ_ERROR`).
    #[error("cannot read the store: {0}")]
    Store(String),
    /// Encoding the output failed (`OUTPUT_WRITE_ERROR`).
    #[error("cannot encode the output: {0}")]
    Output(String),
    #[error("the export was cancelled")]
    Cancelled,
}
